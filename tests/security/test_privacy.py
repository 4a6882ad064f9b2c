"""Optional differential privacy: sites clip their update, the coordinator adds calibrated noise,
and the run record reports the epsilon spent."""

import math

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from client.local_round import SiteRound
from client.site import SiteContext
from common.model import build_model
from common.privacy import gaussian_epsilon
from common.run_record import RunRecord
from common.settings import RunSettings
from deploy.demo.synthetic_sites import DEMO_SITES, write_site
from server.rounds import RoundLoop
from server.strategy import build_strategy

TINY = {
    "training": {"local_steps": 2, "patch_size": 16, "batch_size": 1, "learning_rate": 0.05},
    "model": {"channels": [4, 8, 16], "strides": [2, 2]},
    "min_sites": 2,
}


def _settings(dp: bool, **privacy) -> RunSettings:
    return RunSettings.model_validate({**TINY, "privacy": {"differential_privacy": dp, **privacy}})


def _update_norm(before, after) -> float:
    return math.sqrt(sum(float(((after[k] - before[k]) ** 2).sum()) for k in before))


@pytest.mark.parametrize("dp", [False, True])
def test_site_clips_its_update_only_under_dp(tmp_path, dp):
    write_site(DEMO_SITES[0], tmp_path / "data", 2, 1, size=32)
    settings = _settings(dp, clipping_norm=0.01)
    torch.manual_seed(0)
    weights = build_model(settings.model).state_dict()
    job = SiteRound.prepare(SiteContext("site-a", tmp_path / "data", tmp_path / "cache", "cpu", 1), settings)
    trained, _ = job.train(weights, 1)
    norm = _update_norm(weights, trained)
    if dp:
        assert norm <= 0.01 * (1 + 1e-4)
    else:
        assert norm > 0.01  # what a site moves the model by without clipping


def _replies(arrays: dict[str, np.ndarray], sites: int) -> list[Message]:
    return [
        Message(
            RecordDict(
                {
                    "arrays": ArrayRecord({k: Array(v.copy()) for k, v in arrays.items()}),
                    "metrics": MetricRecord({"num-examples": 4.0}),
                }
            ),
            dst_node_id=n + 1,
            message_type="train",
        )
        for n in range(sites)
    ]


@pytest.mark.parametrize("dp", [False, True])
def test_coordinator_adds_noise_calibrated_to_the_clip(dp):
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0  # as in a ServerApp
    settings = _settings(dp, noise_multiplier=0.8, clipping_norm=0.5)
    strategy = build_strategy(settings)
    arrays = {"w": np.zeros(200_000, dtype=np.float32)}
    strategy.configure_train(1, ArrayRecord({"w": Array(arrays["w"].copy())}), ConfigRecord(), _NoGrid())
    aggregated, _ = strategy.aggregate_train(1, _replies(arrays, sites=2))
    values = aggregated["w"].numpy()
    if dp:
        expected = 0.8 * 0.5 / 2  # noise_multiplier * clipping_norm / sites
        assert values.std() == pytest.approx(expected, rel=0.05)
    else:
        assert not values.any()


class _NoGrid:
    """configure_train asks the grid which sites are connected: two are."""

    def get_node_ids(self):
        return [1, 2]


def test_epsilon_matches_the_renyi_bound():
    # Continuous optimum of T*a/(2 z^2) + log(1/delta)/(a-1): T/(2z^2) + sqrt(2 T log(1/delta))/z.
    for z, rounds in ((0.8, 1), (1.1, 10), (2.0, 50)):
        closed = rounds / (2 * z * z) + math.sqrt(2 * rounds * math.log(1e5)) / z
        assert closed <= gaussian_epsilon(z, rounds, 1e-5) <= closed * 1.02
    assert gaussian_epsilon(1.0, 10, 1e-5) > gaussian_epsilon(1.0, 5, 1e-5) > gaussian_epsilon(2.0, 5, 1e-5)


def test_run_record_reports_epsilon_spent(tmp_path):
    settings = _settings(True, noise_multiplier=1.1, delta=1e-5)
    record = RunRecord(tmp_path)
    record.create("dp", settings, transport={"tls": True})
    loop = RoundLoop(grid=None, strategy=None, settings=settings, record=record)
    loop._account_privacy(3)
    saved = record.read()
    assert saved["privacy"]["epsilon"] == pytest.approx(gaussian_epsilon(1.1, 3, 1e-5))
    assert saved["transport"] == {"tls": True, "dp_epsilon": saved["privacy"]["epsilon"], "dp_delta": 1e-5}
