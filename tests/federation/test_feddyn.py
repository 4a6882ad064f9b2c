"""FedDyn (drift correction) on the real ServerApp and ClientApp over the in-process Grid.

Under SecAgg+ the coordinator gets only the masked sum, yet the new model is FedDyn's corrected
average (``2 * mean(w_site) - w_sent`` in round 1): the correction needs nothing but the sum. Each
site's FedDyn term stays in its cache under the run's key and is dropped when a new run starts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Message

from client.drift import FEDDYN_STATE, ROUNDS_KEPT
from client.local_round import SiteRound
from client.site import SiteContext
from common.errors import SiteDataError
from common.message_envelope import opened
from common.model import build_model
from common.run_record import RunRecord, latest_checkpoint, load_checkpoint
from common.settings import RunSettings
from deploy.in_process.federation import FIRST_NODE_ID, run_in_process, site_grid
from harness.federation import write_sphere_site
from harness.secrecy import assert_no_update_received

TRAIN_CASES = {"site-a": 2, "site-b": 3, "site-c": 4}  # unequal, so the weighting shows
ALPHA = 0.1


def settings(mode: str, rounds: int = 1) -> RunSettings:
    return RunSettings.model_validate(
        {
            "rounds": rounds,
            "min_sites": 3,
            "round_timeout_s": 60,
            "model": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1},
            "training": {"local_steps": 2, "patch_size": 16, "batch_size": 1, "mixed_precision": False},
            "strategy": {"name": "feddyn", "feddyn_alpha": ALPHA},
            "aggregation": {"mode": mode, "max_weight": 8},
            "faults": {"straggler_grace_s": 0.3, "stage_timeout_s": 10, "quorum_wait_s": 3},
        }
    )


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sites")
    return {
        site: write_sphere_site(root / site, 10 * index, train=cases, val=1)
        for index, (site, cases) in enumerate(TRAIN_CASES.items())
    }


def state_of(run_dir: Path, site: str) -> Path:
    return run_dir.parent / "site-caches" / site / "round-state"


def test_under_secagg_the_coordinator_sees_only_masked_sums_and_still_corrects_drift(folders, tmp_path):
    run = settings("secagg+")
    received: list[np.ndarray | bytes] = []

    def keep(reply: Message) -> Message:  # what the coordinator receives, as the secure-aggregation test keeps it
        if reply.has_content():
            content = opened(reply.content, "site")
            received.extend(a.numpy() for record in content.array_records.values() for a in record.values())
            for record in content.config_records.values():
                for value in record.values():
                    received.extend(v for v in (value if isinstance(value, list) else [value]) if isinstance(v, bytes))
        return reply

    run_dir = tmp_path / "run"
    grid = site_grid(run_dir, run, folders, tamper={FIRST_NODE_ID + n: keep for n in range(len(folders))})
    record = run_in_process(run_dir, run, grid)
    assert record.read()["status"] == "completed"
    checkpoint = latest_checkpoint(run_dir)
    assert checkpoint is not None
    new_global = load_checkpoint(checkpoint).weights

    torch.manual_seed(run.seed)
    sent = build_model(run.model).state_dict()
    updates, counts = {}, {}
    for site, data in folders.items():  # each site's plaintext update, recomputed from its inputs
        job = SiteRound.prepare(SiteContext(site, data, tmp_path / "recompute" / site, "auto", 1), run)
        updates[site], metrics = job.train(sent, 1, record.run_key())
        counts[site] = metrics["num-examples"]
    total = sum(counts.values())
    parameters = {name for name, _ in build_model(run.model).named_parameters()}
    for name, tensor in new_global.items():
        mean = sum(updates[site][name] * counts[site] for site in folders) / total
        expected = 2 * mean - sent[name] if name in parameters else mean
        assert torch.allclose(tensor, expected, atol=1e-4), name

    assert_no_update_received(received, updates)  # no reply carries a site's update, whole or as raw bytes

    key = record.run_key()
    for site in folders:  # the site's term g = -alpha (w_site - w_sent), kept at home under the run's key
        saved = torch.load(state_of(run_dir, site) / key / f"{FEDDYN_STATE}.pt", weights_only=True)
        assert set(saved) == parameters | {ROUNDS_KEPT} and saved.pop(ROUNDS_KEPT).tolist() == [1]
        for name, g in saved.items():
            assert torch.allclose(g, -ALPHA * (updates[site][name] - sent[name]), atol=1e-6), name


def test_site_state_carries_across_rounds_and_is_dropped_by_a_new_run(folders, tmp_path):
    first_dir = tmp_path / "first" / "run"
    first = run_in_process(first_dir, settings("plain", rounds=2), site_grid(first_dir, settings("plain", 2), folders))
    assert first.read()["status"] == "completed"
    kept = {site: state_of(first_dir, site) for site in folders}
    for site, folder in kept.items():
        assert [path.name for path in folder.iterdir()] == [first.run_key()], site
        after_two = torch.load(folder / first.run_key() / f"{FEDDYN_STATE}.pt", weights_only=True)
        assert after_two.pop(ROUNDS_KEPT).tolist() == [1, 2]  # round 2 built on round 1's term
        assert any(float(g.abs().max()) > 0 for g in after_two.values())

    again = RunRecord(first_dir)
    assert again.run_key() == first.run_key()  # a resume keeps the key, so the sites keep their terms

    second_dir = tmp_path / "first" / "second-run"  # same sites' caches (site-caches beside both runs)
    second = run_in_process(second_dir, settings("plain"), site_grid(second_dir, settings("plain"), folders))
    assert second.run_key() != first.run_key()
    for site, folder in kept.items():
        assert [path.name for path in folder.iterdir()] == [second.run_key()], site


def test_a_train_message_without_a_valid_run_key_is_refused_by_the_site(folders, tmp_path):
    site = SiteContext("site-a", folders["site-a"], tmp_path / "cache", "auto", 1)
    job = SiteRound.prepare(site, settings("plain"))
    torch.manual_seed(0)
    weights = build_model(settings("plain").model).state_dict()
    with pytest.raises(SiteDataError, match="no valid run key"):
        job.train(weights, 1, "../../etc")
    assert not (tmp_path / "cache" / "round-state").exists()
