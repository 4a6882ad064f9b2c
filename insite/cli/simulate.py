"""``insite simulate``: the coordinator with many virtual sites, in Flower's simulation engine."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from common.run_record import write_json
from common.settings import load_run_settings, parse_run_settings
from configs import shipped
from deploy.simulation.engine import SITE_CASES, write_sites
from deploy.simulation.engine import simulate as run_simulation
from insite.cli.terminal import console

DEFAULT_CONFIG = shipped("simulation.toml")


def _round_line(total: int, sites: int) -> Callable[[dict], None]:
    def show(row: dict) -> None:
        trained = len(row.get("sites_drawn", row.get("sites_online", [])))
        dropped = f", dropped: {', '.join(sorted(row['dropped']))}" if row.get("dropped") else ""
        console.print(
            f"round {row['round']:>3}/{total}  global Dice {row['global_dice']:.3f}  "
            f"{trained} of {sites} sites trained{dropped}  ({row['wall_s']:.1f} s)",
            highlight=False,
        )

    return show


def simulate(
    sites: int = typer.Option(100, "--sites", min=2, help="Virtual sites (synthetic data, written once, reused)."),
    per_round: int = typer.Option(
        None,
        "--per-round",
        min=0,
        help="Sites drawn to train each round, 0 for every site (default: the config's sites_per_round).",
    ),
    rounds: int = typer.Option(None, help="Override the number of rounds in the config."),
    config: Path = typer.Option(DEFAULT_CONFIG, help="Run settings (TOML, \\[run] table), as for a federation."),
    workspace: Path = typer.Option(Path("insite-simulation"), help="Folder for the synthetic sites and the run."),
    cpus: int = typer.Option(
        None, min=1, help="ClientApps at a time (Ray actors of one CPU each); default: this machine's CPUs."
    ),
) -> None:
    """Run the coordinator's rounds with many virtual sites on this machine (Flower simulation, Ray).

    The project's own ServerApp and ClientApp run in Flower's simulation engine: each site is a
    virtual node with its own synthetic data (the demo's three scanner types in turn), each round
    trains a reproducible draw of sites, and the coordinator aggregates as in a federation. There
    is no network, TLS or node authentication; this is for sizing a consortium, not for privacy.
    Writes the run folder (checkpoints, rounds) and simulation.json to the workspace, and reports
    rounds per minute and the coordinator's peak memory.
    """
    settings = load_run_settings(config)
    updates: dict[str, int] = {}
    if rounds is not None:
        updates["rounds"] = rounds
    if per_round is not None:
        updates["sites_per_round"] = per_round
    if updates:
        settings = parse_run_settings({**settings.model_dump(), **updates}, f"{config} with the command's options")
    cpus = cpus or os.cpu_count() or 1
    workspace = workspace.resolve()
    drawn = settings.sites_per_round or sites
    console.print(
        f"simulating {sites} sites, {min(drawn, sites)} trained per round, {settings.rounds} rounds, "
        f"{cpus} ClientApps at a time; workspace {workspace}",
        highlight=False,
    )
    with Progress(
        TextColumn("writing synthetic sites"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task("sites", total=sites, completed=0)
        write_sites(workspace / "sites", sites, *SITE_CASES, on_site=lambda _: progress.advance(task))
        progress.update(task, completed=sites)
    flower = logging.getLogger("flwr")
    flower.setLevel(logging.WARNING)  # the engine's per-message INFO lines would drown the rounds
    flower.propagate = False  # Flower prints through its own handler; the root one would repeat each line
    # insite runs Flower's engine through run_simulation on purpose (deploy/simulation/engine.py);
    # Flower's advice to use `flwr run` instead is not something an insite user can act on.
    flower.addFilter(lambda record: "`run_simulation` function is deprecated" not in record.getMessage())
    # Ray's notice of a future change for actors without GPUs: the sites here ask for none.
    warnings.filterwarnings("ignore", message="Tip: In future versions of Ray", category=FutureWarning)
    result = run_simulation(workspace, settings, sites, cpus, on_round=_round_line(settings.rounds, sites))
    summary = {
        "sites": sites,
        "sites_per_round": min(drawn, sites),
        "status": result.status,
        "rounds": len(result.round_seconds),
        "round_seconds": result.round_seconds,
        "rounds_per_minute": result.rounds_per_minute,
        "rounds_per_minute_after_first": result.rounds_per_minute_after_first,
        "seconds": result.seconds,
        "coordinator_peak_rss_mb": result.peak_rss_mb,
    }
    write_json(workspace / "simulation.json", summary)
    after_first = (
        f" ({result.rounds_per_minute_after_first:.1f} after the first, which also starts the engine's workers)"
        if len(result.round_seconds) > 1
        else ""
    )
    console.print(
        f"[bold green]{result.status}[/]: {len(result.round_seconds)} rounds, "
        f"{result.rounds_per_minute:.1f} rounds/min{after_first}; coordinator peak memory "
        f"{result.peak_rss_mb:.0f} MB; {workspace / 'simulation.json'}",
        highlight=False,
    )
