"""Reporting a federated run at the terminal: shared by ``demo`` (one host) and ``coord run|resume``."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from common.run_record import RunRecord, write_json
from common.settings import RunSettings
from insite.cli.progress import plot_dice, round_line, rounds_table
from insite.cli.terminal import console


def round_printer(settings: RunSettings) -> Callable[[dict], None]:
    """Print each round's line as the coordinator closes it (with who dropped out or came back)."""
    previous: list[dict] = []

    def show(row: dict) -> None:
        console.print(round_line(row, settings.rounds, previous[-1] if previous else None), highlight=False)
        previous.append(row)

    return show


def report_run(run_dir: Path, settings: RunSettings, record: dict, started: float) -> None:
    """After the last round: the table, ``dice.png``, ``summary.json`` and a closing line."""
    rows = RunRecord(run_dir).rounds()
    console.print(rounds_table(rows))
    plot = plot_dice(rows, run_dir / "dice.png")
    final = rows[-1]
    summary = {
        "rounds": len(rows),
        "sites": record["sites"],
        "strategy": settings.strategy.name,
        "aggregation": settings.aggregation.mode,
        "final_global_dice": final["global_dice"],
        "final_site_dice": {n: m.get("dice") for n, m in final["sites"].items()},
        "wall_seconds": time.monotonic() - started,
        "mean_round_seconds": sum(r["wall_s"] for r in rows) / len(rows),
    }
    write_json(run_dir / "summary.json", summary)
    cases = int(sum(m.get("num_val", 0) for m in final["sites"].values()))
    console.print(
        f"[bold green]done[/] in {summary['wall_seconds'] / 60:.1f} min: global Dice "
        f"{final['global_dice']:.3f} on the {cases} held-out cases of {len(final['sites'])} sites "
        f"after {len(rows)} rounds ({settings.strategy.name}, {settings.aggregation.mode}).\n"
        f"run folder: {run_dir} (checkpoints/, metrics.json, summary.json, {plot.name})"
    )
