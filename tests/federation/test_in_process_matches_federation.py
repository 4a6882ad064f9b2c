"""The benchmark's in-process path (bench.fl_vs_pooled, deploy.in_process) trains what a real federation trains.

One FedDyn round from the same seed, data and settings: once through a real SuperLink and three
SuperNodes (TLS, node auth, the app-approval gate), once through the project's ServerApp and
ClientApp over the in-process Grid. The round-1 models must agree, so the benchmark's figures
stand for the federation's. FedDyn, because it exercises the most of a round: the coordinator's
correction, the sites' kept state and the run key that names it.
"""

from __future__ import annotations

import pytest
import torch

from common.model import build_model
from common.run_record import RunRecord, checkpoint_path, load_checkpoint
from common.settings import RunSettings
from deploy.demo.synthetic_sites import DEMO_SITES, write_site
from deploy.demo.workspace import Workspace, provision_demo, run_demo_federation
from deploy.in_process.federation import run_in_process, site_grid

pytestmark = [pytest.mark.federation, pytest.mark.slow, pytest.mark.timeout(900)]


def test_round_one_weights_agree_between_the_real_federation_and_the_in_process_path(tmp_path):
    settings = RunSettings.model_validate(
        {
            "rounds": 1,
            "min_sites": 3,
            "round_timeout_s": 300,
            "training": {"local_steps": 3, "patch_size": 16, "batch_size": 1, "mixed_precision": False},
            "model": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1},
            "strategy": {"name": "feddyn", "feddyn_alpha": 0.1},
            "aggregation": {"mode": "plain"},
        }
    )
    space = Workspace(tmp_path / "federation")
    names = [profile.name for profile in DEMO_SITES]
    for profile in DEMO_SITES:
        write_site(profile, space.site_dir(profile.name) / "data", 2, 1, size=32)
    provision_demo(space, names)
    RunRecord(space.run_dir).create("test", settings, transport={"tls": True})
    assert run_demo_federation(space, settings, lambda _: None, lambda _: None)["status"] == "completed"
    federated = load_checkpoint(checkpoint_path(space.run_dir, 1)).weights

    run_dir = tmp_path / "in-process" / "run"
    folders = {name: space.site_dir(name) / "data" for name in names}
    record = run_in_process(run_dir, settings, site_grid(run_dir, settings, folders))
    assert record.read()["status"] == "completed"
    in_process = load_checkpoint(checkpoint_path(run_dir, 1)).weights

    torch.manual_seed(settings.seed)
    initial = build_model(settings.model).state_dict()
    assert federated.keys() == in_process.keys() == initial.keys()
    assert any(not torch.allclose(federated[name], initial[name]) for name in initial)  # the round trained
    for name, tensor in federated.items():  # the SuperNodes may use more threads than the in-process sites
        assert torch.allclose(tensor, in_process[name], atol=1e-5), name
