"""Running a federation from a workspace folder and reporting it: shared by ``demo`` and ``coord``."""

from __future__ import annotations

import time
from pathlib import Path

from common.config import RunSettings
from deploy.local import Workspace, run_local
from insite.cli.progress import console, plot_dice, round_line, rounds_table
from server.checkpoint import RunRecord, write_json


def run_and_report(space: Workspace, settings: RunSettings, started: float, round_offset: int = 0,
                   initial_weights: Path | None = None, port: int | None = None) -> dict:
    """Run the rounds with a line per round; then the table, ``dice.png`` and ``summary.json``."""
    record = run_local(space, settings, on_event=lambda text: console.print(f"[dim]{text}[/]"),
                       on_round=lambda row: console.print(round_line(row, settings.rounds)),
                       round_offset=round_offset, initial_weights=initial_weights, port=port)
    rows = RunRecord(space.run_dir).rounds()
    console.print(rounds_table(rows))
    plot = plot_dice(rows, space.run_dir / "dice.png")
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
    write_json(space.run_dir / "summary.json", summary)
    cases = int(sum(m.get("num_val", 0) for m in final["sites"].values()))
    console.print(
        f"[bold green]done[/] in {summary['wall_seconds'] / 60:.1f} min: global Dice "
        f"{final['global_dice']:.3f} on the {cases} held-out cases of {len(final['sites'])} sites "
        f"after {len(rows)} rounds ({settings.strategy.name}, {settings.aggregation.mode}).\n"
        f"run folder: {space.run_dir} (checkpoints/, metrics.json, summary.json, {plot.name})"
    )
    return record
