"""``insite site keygen | join | train-local``: the site's node key, its SuperNode and its own model, at the site."""

from __future__ import annotations

from pathlib import Path

import typer

from client.local_only import train_local_only
from client.site import SiteContext
from common.keys import fingerprint
from common.settings import load_run_settings
from configs import shipped
from deploy.node_keys import create_site_key, load_site_public_key
from deploy.site.service import serve_site
from deploy.site.settings import load_site_settings
from insite.cli.terminal import console, say

SHIPPED_RUN_SETTINGS = shipped("federation.toml")


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


def train_local(
    config: Path = typer.Option(
        Path("site.toml"), "--config", help="This site's settings (the site.toml from the coordinator's kit)."
    ),
    run_settings: Path = typer.Option(
        SHIPPED_RUN_SETTINGS,
        "--run-settings",
        help="The federation's run settings (TOML, \\[run] table): the same rounds x local steps, model and "
        "seed as the site's share of the federated run.",
    ),
) -> None:
    """Train this site's local-only model on its own training cases; it stays in the cache folder.

    'insite coord evaluate --local-only' then compares it with the federated models: only its
    scores on this site's held-out cases leave the site (Dice, HD95, case count).
    """
    site = load_site_settings(config)
    settings = load_run_settings(run_settings)
    context = SiteContext(site.name, site.data_path, site.cache_path, site.device, site.threads)
    with console.status(f"{site.name}: training the local-only model") as status:
        path = train_local_only(
            context,
            settings,
            lambda done: status.update(f"{site.name}: local-only model, round {done} of {settings.rounds} done"),
        )
    say(f"local-only model of {site.name} ({settings.rounds} rounds x {settings.training.local_steps} steps) in {path}")


def register(app: typer.Typer) -> None:
    """Add the node commands to ``insite site``."""
    app.command()(keygen)
    app.command()(join)
    app.command("train-local")(train_local)
