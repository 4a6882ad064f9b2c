"""Every strategy a run can name trains past its first round, and its model keeps the network's dtypes.

Flower's FedAdam and FedYogi return float64 models under NumPy 2; the sites refuse a global model
whose tensors are not the network's, so without the round loop's cast every round after the first
failed at every site and the run paused.
"""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest
import torch

from common.run_record import checkpoint_path, load_checkpoint
from common.settings import RunSettings, StrategyName
from deploy.in_process.federation import run_in_process, site_grid
from harness.federation import write_sphere_site


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sites")
    return {site: write_sphere_site(root / site, 10 * n, train=1, val=1) for n, site in enumerate(("site-a", "site-b"))}


@pytest.mark.parametrize("strategy", get_args(StrategyName))
def test_strategy_runs_three_rounds_in_the_networks_dtypes(strategy, folders, tmp_path):
    settings = RunSettings.model_validate(
        {
            "rounds": 3,
            "min_sites": 2,
            "round_timeout_s": 60,
            "model": {"channels": [4, 8], "strides": [2], "num_res_units": 0},
            "training": {"local_steps": 1, "patch_size": 16, "batch_size": 1, "mixed_precision": False},
            "strategy": {"name": strategy},
            "aggregation": {"mode": "plain"},
            "faults": {"straggler_grace_s": 0.3, "quorum_wait_s": 1, "round_attempts": 1},
        }
    )
    run_dir = tmp_path / "run"
    record = run_in_process(run_dir, settings, site_grid(run_dir, settings, folders))
    assert record.read()["status"] == "completed", record.read().get("failure")
    first, last = (load_checkpoint(checkpoint_path(run_dir, n)).weights for n in (1, 3))
    assert {tensor.dtype for tensor in last.values()} == {torch.float32}
    assert any(not torch.equal(first[name], last[name]) for name in first)
