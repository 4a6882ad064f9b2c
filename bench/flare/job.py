"""The FLARE side of :mod:`bench.flare.compare`: insite's UNet and site training as a FLARE 2.9 FedAvg job, simulated.

Runs in the bench's own virtualenv, with the repository on PYTHONPATH: FLARE's standard PyTorch
``FedAvgRecipe`` (FedAvg controller, in-time weighted averaging, PyTorch file persistor) in
``SimEnv``, one client per site folder under ``<work>/sites``, each running
:mod:`bench.flare.site_train` through the Client API. The server builds the global model with
insite's ``common.model.build_model``; :class:`bench.flare.round_timer.RoundTimer` stamps the rounds
into ``<work>/events.jsonl``, beside this process's start and end of the simulation.

    <bench venv>/bin/python -m bench.flare.job --work DIR --settings FILE --threads N
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nvflare.app_common.default_component_policy import DEFAULT_CLASS_ALLOW_LIST
from nvflare.app_common.widgets.component_path_authorizer import CLASS_ALLOW_LIST
from nvflare.app_opt.pt.recipes.fedavg import FedAvgRecipe
from nvflare.recipe.sim_env import SimEnv

from bench.flare.round_timer import RoundTimer, stamp
from common.settings import ModelSettings, RunSettings

JOB = "insite-unet-fedavg"
# FLARE 2.9 builds only allow-listed classes; beyond its default list, those this job's config names.
INSITE_COMPONENTS = ("common.model.build_model", "common.settings.ModelSettings", "bench.flare.round_timer.RoundTimer")


def model_config(model: ModelSettings) -> dict:
    """The global model as FLARE component config: the server calls ``build_model(ModelSettings(...))``."""
    settings = {"path": "common.settings.ModelSettings", "args": model.model_dump()}
    return {"class_path": "common.model.build_model", "args": {"settings": settings}}


def allow_insite_components(workspace: Path) -> None:
    """Write the simulator's site resources with FLARE's default allow-list plus :data:`INSITE_COMPONENTS`."""
    local = workspace / "local"
    local.mkdir(parents=True, exist_ok=True)
    resources = {"format_version": 2, CLASS_ALLOW_LIST: [*DEFAULT_CLASS_ALLOW_LIST, *INSITE_COMPONENTS]}
    (local / "resources.json").write_text(json.dumps(resources, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="holds sites/<name>/data; the simulation goes here")
    parser.add_argument("--settings", type=Path, required=True, help="RunSettings as JSON")
    parser.add_argument("--threads", type=int, required=True, help="torch threads per site")
    args = parser.parse_args()
    settings = RunSettings.model_validate_json(args.settings.read_text())
    sites = sorted(path.name for path in (args.work / "sites").iterdir())
    events = args.work / "events.jsonl"
    recipe = FedAvgRecipe(
        name=JOB,
        model=model_config(settings.model),
        min_clients=len(sites),
        num_rounds=settings.rounds,
        train_script=str(Path(__file__).with_name("site_train.py")),
        train_args=f"--settings {args.settings} --sites {args.work / 'sites'} --threads {args.threads}",
        key_metric="incoming-dice",  # what the sites score (the recipe's default, accuracy, they do not)
    )
    # A recipe has no public call for an extra server component; FLARE's own recipe helpers
    # (nvflare.recipe.utils.add_experiment_tracking and others) add theirs to its job the same way.
    recipe._job.to_server(RoundTimer(str(events)), id="round_timer")
    env = SimEnv(clients=sites, num_threads=len(sites), workspace_root=str(args.work / "simulation"))
    allow_insite_components(args.work / "simulation" / JOB)
    stamp(events, "simulation_started")
    recipe.run(env)
    stamp(events, "simulation_finished")


if __name__ == "__main__":
    main()
