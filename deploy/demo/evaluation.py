"""The demo's closing comparison: the consensus model, each site's adaptation of it, and each site's local-only model.

Each site trains its local-only model at home (:func:`client.local_only.train_local_only`: the
run's rounds x local steps on its own training cases), the three side by side in their own
processes with the SuperNodes' share of the cores, and keeps it in its cache folder. Then a
federated evaluation over the same SuperLink and SuperNodes as the training scores the consensus
model (the run's last checkpoint), has each site adapt it to its own cases and score that
(:mod:`client.personalise`), and scores each site's local-only model; only scores leave the
sites. The result is filed in the training run's record, so the dashboard's run history shows it.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from functools import partial
from typing import Any

from client.local_only import train_local_only
from client.site import SiteContext
from common.errors import SiteDataError
from common.run_record import latest_checkpoint
from common.settings import RunSettings
from deploy.coordinator.evaluation import file_with_training_runs, latest_result, prepare_evaluation, read_models
from deploy.demo.site_processes import run_per_site
from deploy.demo.workspace import Workspace, default_threads, run_demo_federation


def train_local_only_models(
    workspace: Workspace, settings: RunSettings, on_round: Callable[[str, int], None]
) -> dict[str, SiteDataError]:
    """Every site's local-only model, the sites side by side; the sites that could not train one, and why.

    A site without a model still takes part in the comparison: its evaluation reply names the
    reason, and the other sites' scores stand.
    """
    names = workspace.site_names()
    threads = default_threads(len(names))
    jobs = {name: partial(_train_site, workspace.site(name, threads).context, settings) for name in names}
    outcomes = run_per_site(jobs, lambda event: on_round(*event), "local-only training")
    return {name: outcome for name, outcome in outcomes.items() if isinstance(outcome, SiteDataError)}


def _train_site(site: SiteContext, settings: RunSettings, events: queue.Queue) -> None:
    train_local_only(site, settings, lambda done: events.put((site.name, done)))


def compare_with_local_only(
    workspace: Workspace, settings: RunSettings, on_event: Callable[[str], None]
) -> dict[str, Any]:
    """Score the consensus model, each site's adaptation of it and every site's local-only model at every site."""
    consensus = latest_checkpoint(workspace.run_dir)
    models, refused = read_models([consensus] if consensus else [], settings.training.patch_size)
    transport = {"tls": True, "node_auth": True}
    prepare_evaluation(workspace.evaluation_dir, settings, models, refused, True, transport, personalised=True)
    run_demo_federation(workspace, settings, on_event, lambda _: None, run_dir=workspace.evaluation_dir)
    result = latest_result(workspace.evaluation_dir)
    file_with_training_runs(workspace.evaluation_dir, result)
    return result
