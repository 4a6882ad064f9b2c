"""The demo's closing comparison: the consensus model against each site's local-only model.

Each site trains its local-only model at home (:func:`client.local_only.train_local_only`: the
run's rounds x local steps on its own training cases, the cores to itself as it would have them
alone), keeps it in its cache folder, and, in a federated evaluation over the same SuperLink and
SuperNodes as the training, sends only that model's scores. The consensus model is the run's last
checkpoint. The result is filed in the training run's record, so the dashboard's run history shows it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from typing import Any

from client.local_only import train_local_only
from common.run_record import latest_checkpoint
from common.settings import RunSettings
from deploy.coordinator.evaluation import file_with_training_runs, latest_result, prepare_evaluation, read_models
from deploy.demo.workspace import Workspace, run_demo_federation


def train_local_only_models(workspace: Workspace, settings: RunSettings, on_round: Callable[[str, int], None]) -> None:
    """Every site's local-only model, one site after the other, each with all the cores."""
    for name in workspace.site_names():
        site = workspace.site(name, os.cpu_count() or 1).context
        train_local_only(site, settings, partial(on_round, name))


def compare_with_local_only(
    workspace: Workspace, settings: RunSettings, on_event: Callable[[str], None]
) -> dict[str, Any]:
    """Score the consensus model and every site's local-only model at every site; the result."""
    consensus = latest_checkpoint(workspace.run_dir)
    models, refused = read_models([consensus] if consensus else [], settings.training.patch_size)
    prepare_evaluation(workspace.evaluation_dir, settings, models, refused, True, {"tls": True, "node_auth": True})
    run_demo_federation(workspace, settings, on_event, lambda _: None, run_dir=workspace.evaluation_dir)
    result = latest_result(workspace.evaluation_dir)
    file_with_training_runs(workspace.evaluation_dir, result)
    return result
