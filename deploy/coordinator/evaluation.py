"""A federated evaluation's run folder: prepared on the coordinator, seen through by the run supervisor.

``insite coord evaluate`` and ``insite demo`` read every MODEL (:mod:`.evaluation_models`), refuse
the ones the sites cannot score before any site is asked, and write the rest into a new run folder:
``run.json`` with ``task = "evaluate"`` (the run supervisor submits it like a training run, and the
ServerApp dispatches on it), ``models/NN.pt`` (plain weights) and the evaluation request
(:mod:`common.evaluation`). Once the ServerApp has appended its result to that ``run.json``, the
result is also filed in the run record of each training run whose checkpoint was scored, so the
run history shows it beside the run it judges.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from common.evaluation import TASK, EvaluationRequest, ModelToScore, write_request
from common.run_record import RUN_RECORD, RunRecord
from common.settings import RunSettings
from deploy.coordinator.evaluation_models import CandidateModel, ModelRefused, model_name, read_model

log = logging.getLogger(__name__)

LOCAL_ONLY = "local-only (each site's own)"
PERSONALISED = "adapted at each site"


def read_models(paths: list[Path], window: int) -> tuple[list[CandidateModel], dict[str, str]]:
    """The models the sites can score, and each refused one by name with why."""
    taken: set[str] = set()
    accepted, refused = [], {}
    for path in paths:
        name = model_name(path, taken)
        taken.add(name)
        try:
            accepted.append(read_model(path, name, window))
        except ModelRefused as error:
            log.warning("%s", error)
            refused[name] = str(error)
    return accepted, refused


def require_something_to_score(models: list[CandidateModel], refused: dict[str, str], local_only: bool) -> None:
    if not models and not local_only:
        raise ModelRefused(
            "no model the sites can score: " + (" | ".join(refused.values()) or "give MODEL(s) or --local-only")
        )


def prepare_evaluation(
    run_dir: Path,
    settings: RunSettings,
    models: list[CandidateModel],
    refused: dict[str, str],
    local_only: bool,
    transport: dict[str, Any],
    personalised: bool = False,
) -> EvaluationRequest:
    """Write the evaluation's run folder; :class:`ModelRefused` when nothing is left to score."""
    require_something_to_score(models, refused, local_only)
    record = RunRecord(run_dir)
    record.create(run_dir.name, settings.model_copy(update={"task": TASK}), transport)
    entries = []
    for number, model in enumerate(models, start=1):
        weights = run_dir / "models" / f"{number:02d}.pt"
        weights.parent.mkdir(exist_ok=True)
        torch.save(model.weights, weights)
        entry = ModelToScore(
            name=model.name,
            kind=model.kind,
            source=str(model.source),
            weights=str(weights),
            model=model.model,
            window=model.window,
        )
        entries.append(entry)
        if personalised:
            entries.append(entry.model_copy(update={"name": f"{model.name} {PERSONALISED}", "kind": "personalised"}))
    if local_only:
        entries.append(ModelToScore(name=LOCAL_ONLY, kind="local-only", source="each site's own folder"))
    request = EvaluationRequest(models=tuple(entries), refused=refused)
    write_request(run_dir, request)
    return request


def latest_result(run_dir: Path) -> dict[str, Any]:
    evaluations = RunRecord(run_dir).read().get("evaluations", [])
    if not evaluations:
        raise ModelRefused(f"{run_dir / RUN_RECORD}: the evaluation recorded no result")
    return dict(evaluations[-1])


def file_with_training_runs(run_dir: Path, result: dict[str, Any]) -> list[Path]:
    """Append ``result`` to each training run whose checkpoint it scored; returns those run folders."""
    filed = []
    for model in result["models"]:
        if model["kind"] != "insite checkpoint":
            continue
        training = Path(model["source"]).resolve().parent.parent
        if training == run_dir.resolve() or not (training / RUN_RECORD).is_file() or training in filed:
            continue
        record = RunRecord(training)
        record.update(evaluations=[*record.read().get("evaluations", []), {**result, "evaluation_run": str(run_dir)}])
        filed.append(training)
    return filed
