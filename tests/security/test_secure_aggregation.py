"""SecAgg+ on a real federation (SuperLink + 3 SuperNodes, TLS, node auth) on loopback.

The coordinator runs the project's real ServerApp behind a recording Grid (a test-only wrapper
staged into the app) that keeps every reply the coordinator receives. Site training is
reproducible from its inputs, so the test recomputes each site's plaintext update and shows:
the new global model is the sites' weighted mean within SecAgg+'s quantisation error, and no
received payload equals or contains any site's update, in a first round and in a second whose
keys were set up inside the first round's messages. A halted protocol pauses the run, saying why.
"""

import pickle
import re

import numpy as np
import pytest
import torch
from flwr.common import bytes_to_ndarray

from client.ledger import Ledger
from client.local_round import SiteRound
from client.site import SiteContext
from common.model import build_model
from common.run_record import RunRecord, checkpoint_path, latest_checkpoint, load_checkpoint
from common.settings import RunSettings
from deploy.coordinator.app_bundle import stage_app
from deploy.coordinator.run_supervisor import RunSupervisor
from deploy.coordinator.superlink import SuperLink
from deploy.demo.synthetic_sites import DEMO_SITES, write_site
from deploy.demo.workspace import Workspace, provision_demo, start_demo_site
from deploy.host.processes import ProcessSet
from harness.secrecy import assert_no_update_received

pytestmark = [pytest.mark.federation, pytest.mark.timeout(900)]

SECAGG_STAGES = ("setup", "share_keys", "collect_masked_vectors", "unmask")
TRAIN_CASES = {"site-a": 2, "site-b": 3, "site-c": 4}  # unequal, so weighting matters
SETTINGS = {
    "rounds": 1,
    "min_sites": 3,
    "round_timeout_s": 240,
    "training": {"local_steps": 2, "patch_size": 16, "batch_size": 1, "learning_rate": 0.01},
    "model": {"channels": [4, 8, 16], "strides": [2, 2]},
    "aggregation": {"mode": "secagg+", "max_weight": 8},
}

RECORDING_SERVERAPP = '''
"""Test-only: the project's ServerApp, with every reply the coordinator receives kept."""
import hashlib
import pickle
from pathlib import Path

from flwr.common.serde import error_to_proto, recorddict_to_proto

from flwr.serverapp import ServerApp

from common.message_envelope import ENVELOPE, is_enveloped, opened
from server.app import main as real_main

app = ServerApp()
DIGESTS = []


def _payload(reply):
    if not reply.has_content():
        DIGESTS.append(hashlib.sha256(error_to_proto(reply.error).SerializeToString()).hexdigest())
        return []
    wire = reply.content  # a small reply travels as one envelope of the bytes its site's ledger recorded
    content = opened(wire, "test")
    sent = wire[ENVELOPE]["content"] if is_enveloped(wire) else recorddict_to_proto(content).SerializeToString()
    DIGESTS.append(hashlib.sha256(sent).hexdigest())
    kept = [a.numpy() for rec in content.array_records.values() for a in rec.values()]
    for rec in [*content.config_records.values(), *(wire.config_records.values() if is_enveloped(wire) else [])]:
        for value in rec.values():
            kept += [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, bytes)]
    return kept


class RecordingGrid:
    def __init__(self, grid, sink):
        self._grid, self._sink = grid, sink

    def __getattr__(self, name):
        return getattr(self._grid, name)

    def pull_messages(self, message_ids):
        replies = list(self._grid.pull_messages(message_ids))
        for reply in replies:
            self._sink.extend(_payload(reply))
        return replies

    def send_and_receive(self, messages, *, timeout=None):
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        for reply in replies:
            self._sink.extend(_payload(reply))
        return replies


@app.main()
def main(grid, context):
    sink = []
    try:
        real_main(RecordingGrid(grid, sink), context)
    finally:
        with open(Path(str(context.run_config["run-dir"])) / "received.pkl", "wb") as out:
            pickle.dump(sink, out)
        (Path(str(context.run_config["run-dir"])) / "received-digests.txt").write_text(" ".join(DIGESTS))
'''


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    root = tmp_path_factory.mktemp("secagg")
    space = Workspace(root)
    for profile in DEMO_SITES:
        write_site(profile, space.site_dir(profile.name) / "data", TRAIN_CASES[profile.name], 1, size=32)
    provision_demo(space, [p.name for p in DEMO_SITES])
    app = stage_app(root / "recording-app")
    (app / "server" / "recording.py").write_text(RECORDING_SERVERAPP)
    pyproject = app / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"server.app:app"', '"server.recording:app"'))
    with ProcessSet(space.logs, {}) as processes:
        fed = SuperLink(space.root, space.consortium, processes)
        fed.start()
        for name in space.site_names():
            site = space.site(name, 1)
            fed.register_key(name, site.public_key)
            start_demo_site(fed, site, space.root, apps=[app])
        yield space, fed, app


def _run(federation, run_dir, settings):
    space, fed, app = federation
    RunRecord(run_dir).create("secagg-test", settings, transport={"tls": True})
    return RunSupervisor(fed, run_dir, lambda row: None, lambda event: None, 600, app).run()


def _site_updates(space, settings, scratch, start, round_number):
    """Each site's plaintext update of ``round_number`` from ``start``, recomputed (1 thread, as sites)."""
    torch.set_num_threads(1)
    updates = {}
    for name in space.site_names():
        site = SiteContext(name, space.site_dir(name) / "data", scratch / name, "cpu", 1)
        weights, metrics = SiteRound.prepare(site, settings).train(start, round_number)
        updates[name] = (weights, metrics["num-examples"])
    return updates


def _weighted_mean(updates):
    total = sum(n for _, n in updates.values())
    return {k: sum(w[k] * n for w, n in updates.values()) / total for k in updates["site-a"][0]}


def test_coordinator_learns_only_the_weighted_mean(federation, tmp_path):
    space = federation[0]
    settings = RunSettings.model_validate({**SETTINGS, "rounds": 2})
    run_dir = tmp_path / "run"
    record = _run(federation, run_dir, settings)
    assert record["status"] == "completed" and record["aggregation"] == "secagg+"
    rows = RunRecord(run_dir).rounds()
    assert [set(row["sites"]) for row in rows] == [set(TRAIN_CASES)] * 2

    torch.manual_seed(settings.seed)
    start = build_model(settings.model).state_dict()
    everyone = {}
    for round_number in (1, 2):
        updates = _site_updates(space, settings, tmp_path / "recompute", start, round_number)
        mean = _weighted_mean(updates)
        start = load_checkpoint(checkpoint_path(run_dir, round_number)).weights
        error = max(float((start[k] - mean[k]).abs().max()) for k in mean)
        # Quantisation: 2^22 levels over +-8 after scaling by cases/max_weight (>= 2/8).
        assert error < 1e-4, f"round {round_number}: aggregate differs from the weighted mean by {error}"
        for name, (weights, _) in updates.items():
            spread = max(float((weights[k] - mean[k]).abs().max()) for k in mean)
            assert spread > 100 * error, f"{name}'s round-{round_number} update is too close to the mean"
            everyone[f"{name} round {round_number}"] = weights

    _check_ledgers(space, run_dir)
    received = pickle.loads((run_dir / "received.pkl").read_bytes())
    assert_no_update_received(received, everyone)
    vectors = [bytes_to_ndarray(blob) for blob in received if isinstance(blob, bytes) and blob.startswith(b"\x93NUMPY")]
    assert vectors and {vector.dtype for vector in vectors} == {np.dtype(np.uint32)}  # half of Flower's int64


def _check_ledgers(space, run_dir):
    """Everything the coordinator received is in a site's intact ledger, stage by stage."""
    received = set((run_dir / "received-digests.txt").read_text().split())
    assert received
    logged = set()
    for name in space.site_names():
        ledger = Ledger(space.site(name, 1).context.cache_path)
        assert ledger.verify().intact, ledger.verify().problems
        entries = ledger.entries()
        logged |= {entry["sha256"] for entry in entries}
        kinds = {entry["kind"] for entry in entries}
        assert kinds >= {f"train/secagg+ {stage}" for stage in SECAGG_STAGES} | {"evaluate"}, kinds
        masked = [e for e in entries if e["kind"].endswith("collect_masked_vectors")]
        assert all("masked model update" in e["detail"] for e in masked)
        # Round 2's set-up and key shares went out inside round 1's masked update and unmasking.
        stages = {(e["round"], e["kind"].rpartition(" ")[2]) for e in entries if "secagg+" in e["kind"]}
        assert stages == {(1, stage) for stage in SECAGG_STAGES} | {(2, stage) for stage in SECAGG_STAGES[2:]}
        carried = [e for e in entries if e["round"] == 1 and e["kind"].endswith(SECAGG_STAGES[2:])]
        assert carried and all("the next round's SecAgg+ fields" in e["detail"] for e in carried)
    assert received <= logged, f"{len(received - logged)} replies reached the coordinator unledgered"


def test_secure_aggregation_that_halts_pauses_the_run_and_says_why(federation, tmp_path):
    space = federation[0]
    broken = sorted((space.site_dir("site-c") / "data" / "images").iterdir())[0]
    original = broken.read_bytes()
    broken.write_bytes(b"not a volume")
    try:
        # Every share is needed to unmask: losing site-c halts the protocol mid-round, at every try.
        settings = RunSettings.model_validate(
            {
                **SETTINGS,
                "min_sites": 2,
                "aggregation": {"mode": "secagg+", "max_weight": 8, "reconstruction_threshold": 3},
                "faults": {"round_attempts": 2, "straggler_grace_s": 10},
            }
        )
        run_dir = tmp_path / "run"
        record = _run(federation, run_dir, settings)
    finally:
        broken.write_bytes(original)
    assert record["status"] == "paused" and record["rounds_done"] == 0, record
    message = record["paused"]
    assert re.search(r"secure aggregation halted at the \w[\w ]* stage", message), message
    assert "site-c" in message and broken.name in message
    assert latest_checkpoint(run_dir) is None  # the model was never updated
    last = Ledger(space.site("site-c", 1).context.cache_path).entries()[-1]
    assert last["kind"] == "error" and broken.name in last["detail"]
