"""A federated evaluation on the coordinator: every requested model scored on every site's held-out cases.

No training and no aggregation: for each model of the run folder's evaluation request
(:mod:`common.evaluation`) the online sites get one ``evaluate.model`` message (or
``evaluate.local_only``, which scores each site's own model) and answer with allow-listed scalar
scores only; their replies pass the same egress guard and ledger as training. The waits are the
training loop's: a bounded wait for ``min_sites`` sites online (:class:`server.presence.Presence`),
then a bounded exchange (:func:`server.exchange.exchange`). A site that fails (no validation
cases, a model it cannot load, no reply) is named with its reason under that model, and the other
sites' scores stay. The result is appended to ``run.json``'s ``evaluations``, which the run
history of ``insite coord status`` and the dashboard shows.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from common.errors import InsiteError
from common.evaluation import (
    EVALUATE_MODEL,
    SITE_KINDS,
    EvaluationRequest,
    ModelToScore,
    message_config,
    read_request,
)
from common.run_lock import run_lock
from common.run_record import RunRecord
from common.settings import RunSettings
from server.exchange import Deadline, exchange
from server.live_state import LiveState
from server.presence import Presence
from server.rounds import metric, site_of

log = logging.getLogger(__name__)


def _content(model: ModelToScore) -> RecordDict:
    if model.kind == "local-only":
        return RecordDict({"config": ConfigRecord({})})
    weights = torch.load(Path(model.weights), map_location="cpu", weights_only=True)
    return RecordDict({"arrays": ArrayRecord(weights), "config": message_config(model)})


class FederatedEvaluation:
    """Scores each model of a request at the online sites; see the module docstring."""

    def __init__(
        self,
        grid: Grid,
        settings: RunSettings,
        record: RunRecord,
        state: LiveState,
        presence: Presence | None = None,
    ) -> None:
        self.grid = grid
        self.settings = settings
        self.record = record
        self.state = state
        self.presence = presence or Presence(
            grid,
            settings.min_sites,
            settings.faults.quorum_wait_s,
            on_wait=lambda _, message: state.set("waiting", detail=message),
        )

    def run(self, request: EvaluationRequest, flower_run: int) -> dict[str, Any]:
        """Score every model; append the result to ``run.json``'s ``evaluations`` and return it."""
        started = time.time()
        scored = [self.score(number, model) for number, model in enumerate(request.models, start=1)]
        result = {
            "kind": "evaluation",
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "wall_s": time.time() - started,
            "flower_run": str(flower_run),
            "models": scored,
            "refused": dict(request.refused),
        }
        self.record.update(evaluations=[*self.record.read().get("evaluations", []), result])
        return result

    def score(self, number: int, model: ModelToScore) -> dict[str, Any]:
        """One model's scores by site, and each site that gave none with its reason."""
        online = self.presence.wait_for_quorum(number, f"the evaluation of {model.name}")
        self.state.set("evaluating", round=number, stage=model.name)
        kind, prefix = SITE_KINDS.get(model.kind, (EVALUATE_MODEL, ""))
        content = _content(model)
        messages = [
            Message(content, node_id, kind, group_id=f"evaluation-{number}", ttl=self.settings.round_timeout_s)
            for node_id in online
        ]
        deadline = Deadline(self.settings.round_timeout_s, self.settings.faults.straggler_grace_s, len(online))
        outcome = exchange(self.grid, messages, deadline, f"evaluation of {model.name}", online)
        sites = {
            site_of(reply): {
                "num_val": metric(reply, f"{prefix}num-examples"),
                "dice": metric(reply, f"{prefix}dice"),
                "hd95": metric(reply, f"{prefix}hd95"),
            }
            for reply in outcome.replies
        }
        for site, scores in sorted(sites.items()):
            log.info(
                "%s at %s: Dice %.3f, HD95 %.2f, %d cases",
                model.name,
                site,
                scores["dice"],
                scores["hd95"],
                scores["num_val"],
            )
        return {
            **model.model_dump(mode="json", exclude={"weights"}),
            "sites": sites,
            "failures": dict(outcome.failures),
            "exchange_s": outcome.seconds,
        }


def evaluate(grid: Grid, settings: RunSettings, run_dir: Path, flower_run: int) -> None:
    """The ServerApp's ``evaluate`` task: the run folder's request in, its ``run.json`` updated."""
    record = RunRecord(run_dir)
    with run_lock(run_dir), LiveState(record, flower_run=flower_run) as state:
        state.set("starting")
        record.update(status="running", flower_runs=[*record.read()["flower_runs"], flower_run])
        try:
            FederatedEvaluation(grid, settings, record, state).run(read_request(run_dir), flower_run)
        except InsiteError as error:
            record.update(status="failed", failure=str(error), failed_run=flower_run)
            state.set("failed", detail=str(error))
            raise
        record.update(status="completed", failure=None)
        state.set("completed")
