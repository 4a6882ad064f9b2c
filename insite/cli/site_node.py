"""``insite site keygen | join``: the site's node key and its SuperNode, on the site's own machine."""

from __future__ import annotations

from pathlib import Path

import typer

from common.keys import fingerprint
from deploy.node_keys import create_site_key, load_site_public_key
from deploy.site.service import serve_site
from deploy.site.settings import load_site_settings
from insite.cli.terminal import say


def keygen(
    directory: Path = typer.Option(Path("keys"), "--dir", help="Folder for node.key (0600) and node.pub."),
) -> None:
    """Create this site's node key pair (ECDSA P-384, OpenSSH).

    The private key node.key is created readable by you only and never leaves this machine; send
    node.pub to the coordinator and read them the fingerprint printed here to compare.
    """
    private, public = directory / "node.key", directory / "node.pub"
    create_site_key(private, public)
    say(
        f"private key {private} (0600, stays here)\n"
        f"send to the coordinator: {public.resolve()}\n"
        f"fingerprint: {fingerprint(load_site_public_key(public))}"
    )


def join(
    config: Path = typer.Option(
        Path("site.toml"), "--config", help="This site's settings (the site.toml from the coordinator's kit)."
    ),
) -> None:
    """Join the federation: start this site's SuperNode until Ctrl-C.

    Checks first that the CA certificate and the node key exist and that the data folder holds
    readable cases; then connects to the coordinator over TLS, signing every request with the
    node key. Training runs only app code approved with 'insite site approve-app'.
    """
    serve_site(load_site_settings(config), on_event=say)
    say("SuperNode stopped; every process it started is gone")


def register(app: typer.Typer) -> None:
    """Add the node commands to ``insite site``."""
    app.command()(keygen)
    app.command()(join)
