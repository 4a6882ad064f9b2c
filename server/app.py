"""The coordinator's Flower ServerApp: set up the run, hand over to :class:`server.rounds.RoundLoop`.

A statistics run (``task = "stats"``) hands over to :func:`server.statistics.collect_statistics`, an
evaluation (``task = "evaluate"``) to :func:`server.evaluation.evaluate`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import flwr.superlink.grid.http_grid as http_grid
import torch
from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp

from common.errors import CheckpointError, InsiteError
from common.evaluation import TASK as EVALUATION_TASK
from common.model import build_model
from common.object_pulls import quicker_object_retries
from common.run_lock import run_lock
from common.run_record import RunRecord, load_checkpoint
from common.settings import RunSettings, from_run_config
from server.evaluation import evaluate
from server.live_state import LiveState
from server.packed_grid import PackedGrid
from server.presence import QuorumLost
from server.rounds import RoundLoop
from server.secure import SecureTraining
from server.statistics import collect_statistics
from server.strategy import build_strategy

log = logging.getLogger(__name__)
app = ServerApp()


def starting_point(settings: RunSettings, checkpoint: str, record: RunRecord) -> tuple[ArrayRecord, dict | None]:
    """A fresh model from the run's seed, or the checkpoint a resumed run continues from.

    The second item is the checkpoint's round row when that round was never scored (the run
    stopped before the next round's replies came in): the resumed run scores and records it.
    """
    if not checkpoint:
        torch.manual_seed(settings.seed)
        return ArrayRecord(build_model(settings.model).state_dict()), None
    saved = load_checkpoint(Path(checkpoint))
    if saved.settings_digest != settings.digest():
        raise CheckpointError(f"{checkpoint}: saved with different run settings; refusing to resume")
    scored = any(row["round"] == saved.round for row in record.rounds())
    return ArrayRecord(saved.weights), None if scored else dict(saved.metrics)


@app.main()
def main(grid: Grid, context: Context) -> None:
    if not quicker_object_retries(http_grid):  # the Grid a ServerApp gets from a SuperLink
        log.warning("this Flower version's Grid pulls objects elsewhere; replies keep Flower's 1 s retry wait")
    grid = PackedGrid(grid)  # every exchange sends and receives model weights packed
    settings = from_run_config(context.run_config)
    run_dir = Path(str(context.run_config["run-dir"]) or f"runs/flower-run-{context.run_id}")
    if settings.task == EVALUATION_TASK:
        evaluate(grid, settings, run_dir, context.run_id)
        return
    offset = int(context.run_config["round-offset"])
    record = RunRecord(run_dir)
    with run_lock(run_dir), LiveState(record, flower_run=context.run_id) as state:
        state.set("starting")
        if not (run_dir / "run.json").exists():
            record.create(f"flower-run-{context.run_id}", settings, transport={})
        training_run = settings.task == "train"  # a statistics run aggregates nothing: each site's counts are seen
        secure = training_run and settings.aggregation.mode == "secagg+"
        transport = {**record.read().get("transport", {}), "secure_aggregation": secure, "dp_epsilon": None}
        record.update(
            status="running",
            flower_runs=record.read()["flower_runs"] + [context.run_id],
            aggregation=settings.aggregation.mode if training_run else "none",
            transport=transport,
        )
        try:
            if settings.task == "stats":
                collect_statistics(grid, settings, record, state)
            else:
                arrays, pending = starting_point(settings, str(context.run_config["initial-weights"]), record)
                training = SecureTraining(grid, context, settings) if secure else None
                loop = RoundLoop(grid, build_strategy(settings), settings, record, offset, secure=training, state=state)
                loop.run(arrays, pending)
        except QuorumLost as pause:
            # Not a failure: the run stops where it is, resumable, and says why.
            record.update(status="paused", paused=str(pause), paused_run=context.run_id, failure=None)
            state.set("paused", detail=str(pause))
            log.warning("run paused: %s", pause)
            return
        except InsiteError as error:
            record.update(status="failed", failure=str(error), failed_run=context.run_id)
            state.set("failed", detail=str(error))
            raise
        record.update(status="completed", failure=None, paused=None)
        state.set("completed", rounds=settings.rounds)
