"""``insite coord ...``: what the consortium coordinator runs.

These commands drive a federation whose sites share this host (the layout ``insite demo``
creates, see :mod:`deploy.local`): provision the consortium, launch a run, resume it after an
interruption. Every process started is stopped again, also on Ctrl-C and on failure.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from common.config import load_run_settings
from deploy.federation import PROJECT_ROOT
from deploy.local import Workspace, provision, resume_point
from insite.cli.local_run import run_and_report
from insite.cli.progress import console
from server.checkpoint import RunRecord

app = typer.Typer(no_args_is_help=True)

WORKSPACE = typer.Argument(..., help="Workspace folder: sites/<name>/data per site, consortium/, run/.")
PORT = typer.Option(None, help="SuperLink port on 127.0.0.1 (default: a free one).")


@app.command("provision")
def provision_command(workspace: Path = WORKSPACE) -> None:
    """Create the consortium CA, the SuperLink certificate and a node key pair per site.

    Existing keys and certificates are kept; run it again after adding a site.
    """
    space = Workspace(workspace.resolve())
    names = space.site_names()
    provision(space, names)
    console.print(f"consortium in {space.consortium.root}: CA, SuperLink certificate, "
                  f"{len(names)} site key(s) ({', '.join(names)})")


@app.command("launch")
def launch(workspace: Path = WORKSPACE,
           config: Path = typer.Option(PROJECT_ROOT / "configs" / "federation.toml",
                                       help="Run settings (TOML, [run] table)."),
           port: int = PORT) -> None:
    """Start the SuperLink and every site's SuperNode, and run a new federated run to the end."""
    settings = load_run_settings(config)
    space = Workspace(workspace.resolve())
    started = time.monotonic()
    RunRecord(space.run_dir).create(space.root.name, settings, transport={"tls": True, "node_auth": True})
    run_and_report(space, settings, started, port=port)


@app.command("resume")
def resume(workspace: Path = WORKSPACE, port: int = PORT) -> None:
    """Continue an interrupted run from its last checkpoint with the rounds that remain.

    Round numbers continue where the run stopped; a round that was trained but not yet scored is
    scored first.
    """
    space = Workspace(workspace.resolve())
    settings, done, checkpoint = resume_point(space.run_dir)
    console.print(f"resuming {space.run_dir} after round {done} of {settings.rounds} from {checkpoint.name}")
    run_and_report(space, settings, time.monotonic(), round_offset=done,
                   initial_weights=checkpoint, port=port)
