"""The fault model on a real loopback federation: TLS, node auth, the Fleet-only proxy, SecAgg+.

Faults are real: SIGKILL of a SuperNode, a ClientApp, the ServerApp or the SuperLink, SIGSTOP of a
site, at a chosen stage of a chosen round (deploy/demo/chaos.py watches the coordinator's state), and a
modified site whose ClientApp bypasses its egress guard and sends a poisoned update.
Each test asserts that the run finishes every round, that no round is lost or counted twice,
that checkpoints and metrics agree, that every site's egress ledger verifies, that no process is
left behind, and that the round's row records the fault. The partition test (packet drops between
network namespaces) is in tests/security/test_across_hosts.py beside the namespaces it needs.
"""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
import torch

from client.drift import FEDDYN_STATE, ROUNDS_KEPT
from client.ledger import Ledger
from common.run_record import RunRecord, checkpoint_path, load_checkpoint
from common.settings import RunSettings
from deploy.demo.chaos import Chaos, Fault
from deploy.demo.synthetic_sites import DEMO_SITES, write_site
from deploy.demo.workspace import Workspace, provision_demo, run_demo_federation
from deploy.host.processes import processes_with

pytestmark = pytest.mark.federation

SITES = [profile.name for profile in DEMO_SITES]


def settings(
    rounds: int, aggregation: str = "secagg+", strategy: str = "fedavg", local_steps: int = 2, **faults: float
) -> RunSettings:
    return RunSettings.model_validate(
        {
            "rounds": rounds,
            "min_sites": 2,
            "strategy": {"name": strategy},
            "aggregation": {"mode": aggregation},
            "model": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1},
            "training": {"local_steps": local_steps, "patch_size": 32, "mixed_precision": False},
            "faults": {"straggler_grace_s": 20, "stage_timeout_s": 90, "quorum_wait_s": 120, **faults},
        }
    )


def federation_with(
    tmp_path: Path, run: RunSettings, faults: list[Fault], during: Callable[[Workspace], object] | None = None
) -> tuple[Workspace, dict, list[str]]:
    """A three-site demo federation that meets ``faults``; returns its workspace, record and events.

    ``during`` (given the workspace) makes a fault of its own while the run goes on, in a thread.
    """
    space = Workspace(tmp_path / "ws")
    for profile in DEMO_SITES:
        write_site(profile, space.site_dir(profile.name) / "data", 2, 1, size=32)
    provision_demo(space, SITES)
    RunRecord(space.run_dir).create("faults", run, transport={"tls": True, "node_auth": True})
    events: list[str] = []
    if during is not None:
        threading.Thread(target=during, args=(space,), daemon=True).start()
    record = run_demo_federation(
        space,
        run,
        events.append,
        lambda row: None,
        chaos=lambda processes: Chaos(processes, RunRecord(space.run_dir), faults, events.append),
    )
    return space, record, events


def survived(space: Workspace, record: dict, rounds: int) -> list[dict]:
    """The invariants every fault must leave intact; returns the round rows."""
    assert record["status"] == "completed", record
    run = RunRecord(space.run_dir)
    rows = run.rounds()
    assert [row["round"] for row in rows] == list(range(1, rounds + 1))  # none lost, none twice
    for row in rows:
        saved = load_checkpoint(checkpoint_path(space.run_dir, row["round"]))
        assert saved.metrics["global_dice"] == row["global_dice"] and saved.metrics["sites"] == row["sites"]
    for site in SITES:
        check = Ledger(space.site(site, 1).context.cache_path).verify()
        assert check.intact, (site, check.problems)
    assert processes_with("FLWR_HOME", str(space.root / "flwr-home")) == []  # nothing left behind
    return rows


def node_ids(space: Workspace) -> set[int]:
    """The node ids in the SuperLink's database (a rejoining site must not add one).

    Read from the database file itself: the federation is stopped by the time a test checks, and
    Flower's CLI needs a running SuperLink. Its ``node`` table is Flower's; if a release renames
    it, this fails loudly rather than passing.
    """
    with closing(sqlite3.connect(space.root / "superlink" / "state.db")) as database:
        return {int(node_id) for (node_id,) in database.execute("SELECT node_id FROM node")}


def trained(row: dict) -> set[str]:
    return {site for site, metrics in row["sites"].items() if "num_train" in metrics}


def test_a_site_killed_during_key_exchange_costs_one_round_and_rejoins(tmp_path):
    space, record, events = federation_with(tmp_path, settings(2), [Fault(1, "share-keys", "supernode-site-b")])
    rows = survived(space, record, 2)
    assert rows[0]["dropped"] == {"site-b": "share-keys"} and trained(rows[0]) == {"site-a", "site-c"}
    assert "site-b" in trained(rows[1])  # restarted by the supervisor, back in the next round
    assert any("supernode-site-b restarted" in event for event in events)


@pytest.mark.slow
@pytest.mark.parametrize(("round_number", "stage"), [(1, "setup"), (2, "masked-update"), (2, "unmask")])
def test_a_site_killed_at_any_secure_stage(round_number, stage, tmp_path):
    """Set-up is a stage of its own in round 1; later rounds' set-up travels inside the round before's."""
    space, record, _ = federation_with(tmp_path, settings(3), [Fault(round_number, stage, "supernode-site-c")])
    rows = survived(space, record, 3)
    assert rows[round_number - 1]["dropped"].get("site-c") == stage
    assert "site-c" in trained(rows[2])


@pytest.mark.slow
def test_a_restarted_site_keeps_its_feddyn_term_under_secagg(tmp_path):
    """A site's between-round state is on disk under the run's key: a SuperNode restart loses none of it."""
    space, record, events = federation_with(
        tmp_path, settings(3, strategy="feddyn"), [Fault(2, "masked-update", "supernode-site-b")]
    )
    rows = survived(space, record, 3)
    assert rows[1]["dropped"].get("site-b") == "masked-update" and "site-b" in trained(rows[2])
    assert any("supernode-site-b restarted" in event for event in events)
    key = RunRecord(space.run_dir).run_key()
    for site, rounds in {"site-a": [1, 2, 3], "site-b": [1, 3], "site-c": [1, 2, 3]}.items():
        kept = space.site(site, 1).context.cache_path / "round-state"
        assert [path.name for path in kept.iterdir()] == [key], site
        term = torch.load(kept / key / f"{FEDDYN_STATE}.pt", weights_only=True)
        assert term[ROUNDS_KEPT].tolist() == rounds, site  # site-b's round 3 built on its round 1


@pytest.mark.slow
def test_a_killed_clientapp_is_a_dropped_site_not_a_stuck_round(tmp_path):
    """The ClientApp task at work (training: enough steps to be seconds long) is killed by SIGKILL.

    The site's SuperNode takes its next message once Flower has given the killed task up (its claim
    expires after 2 x 30 s without a heartbeat), so with rounds this short the site may also miss
    the next round; it trains again in the round after.
    """
    fault = Fault(2, "masked-update", "clientapp-site-a")
    space, record, events = federation_with(tmp_path, settings(4, local_steps=40), [fault])
    rows = survived(space, record, 4)
    assert any("SIGKILL to clientapp-site-a in round 2 at masked-update" in event for event in events)
    assert rows[1]["dropped"].get("site-a") == "masked-update"
    assert "site-a" in trained(rows[3])


@pytest.mark.slow
def test_a_stopped_site_is_dropped_as_a_straggler_and_comes_back(tmp_path):
    faults = [
        Fault(2, "masked-update", "supernode-site-b", signal.SIGSTOP),
        Fault(3, "masked-update", "supernode-site-b", signal.SIGCONT),
    ]
    space, record, _ = federation_with(tmp_path, settings(4), faults)
    rows = survived(space, record, 4)
    assert rows[1]["dropped"].get("site-b") == "masked-update"
    assert "site-b" in trained(rows[3])


def test_a_killed_serverapp_is_continued_from_the_last_checkpoint(tmp_path):
    space, record, events = federation_with(tmp_path, settings(2), [Fault(2, "masked-update", "serverapp")])
    survived(space, record, 2)
    restarts = record["coordinator_restarts"]
    assert len(restarts) == 1 and "ServerApp" in restarts[0]["reason"]
    assert len(record["flower_runs"]) == 2


@pytest.mark.slow
@pytest.mark.parametrize("target", ["superlink", "both"])
def test_a_killed_superlink_is_restarted_and_the_run_continued(target, tmp_path):
    faults = [Fault(2, "unmask", "superlink")]
    if target == "both":
        faults.insert(0, Fault(2, "unmask", "serverapp"))
    space, record, events = federation_with(tmp_path, settings(3), faults)
    survived(space, record, 3)
    assert any("superlink restarted" in event for event in events)
    assert len(record["coordinator_restarts"]) == 1
    assert len(node_ids(space)) == len(SITES)  # the sites came back with the same node ids


@pytest.mark.slow
def test_a_supernode_whose_superexec_died_ends_itself_is_restarted_and_rejoins(tmp_path):
    """Flower would keep such a SuperNode up but unable to start a ClientApp (deploy/host/flower_watchdog.py)."""
    space, record, events = federation_with(tmp_path, settings(4), [Fault(2, "masked-update", "superexec-site-b")])
    rows = survived(space, record, 4)
    assert any("supernode-site-b exited with code 70" in event for event in events), events
    assert "site-b" in trained(rows[3])


def lock_superlink_database(at_round: int, seconds: float) -> Callable[[Workspace], None]:
    """Hold the SuperLink database's write lock for ``seconds`` once round ``at_round`` trains."""

    def lock(space: Workspace) -> None:
        run = RunRecord(space.run_dir)
        deadline = time.monotonic() + 600
        while (run.state() or {}).get("stage") != "masked-update" or (run.state() or {}).get("round") != at_round:
            assert time.monotonic() < deadline, "the run never reached the round to lock"
            time.sleep(0.1)
        with closing(sqlite3.connect(space.root / "superlink" / "state.db", timeout=60)) as database:
            database.execute("BEGIN EXCLUSIVE")
            time.sleep(seconds)
            database.rollback()

    return lock


@pytest.mark.slow
def test_a_superlink_database_locked_past_flowers_wait_costs_no_process(tmp_path):
    """Flower waits 5 s for the lock, then answers HTTP 500; the SuperLink launcher waits longer."""
    space, record, events = federation_with(tmp_path, settings(3), [], during=lock_superlink_database(2, 12))
    rows = survived(space, record, 3)
    assert not [event for event in events if "exited with code" in event], events
    assert trained(rows[2]) == set(SITES)


@pytest.mark.slow
def test_below_quorum_waits_says_so_and_goes_on_when_sites_return(tmp_path):
    # Round 1: its set-up is a stage of its own, with the key stages' 90 s limit.
    faults = [
        Fault(1, "setup", "supernode-site-b", signal.SIGSTOP),
        Fault(1, "setup", "supernode-site-c", signal.SIGSTOP),
        Fault(1, "waiting", "supernode-site-b", signal.SIGCONT),
        Fault(1, "waiting", "supernode-site-c", signal.SIGCONT),
    ]
    space, record, events = federation_with(tmp_path, settings(3), faults)
    rows = survived(space, record, 3)
    assert any("SIGCONT to supernode-site-b in round 1 at waiting" in event for event in events)
    assert rows[0]["attempts"] == 2 and "site-b" in rows[0]["earlier_attempts"][0]
    assert trained(rows[0]) == set(SITES)


# A modified site: every Python process started with this on its path loads it (sitecustomize), and
# in site-c's ClientApp it replaces the egress guard with one that poisons the update it lets out.
ROGUE_SITE = """
import importlib.abc, importlib.machinery, sys

import numpy as np


def _rogue(guard):
    def mod(msg, context, call_next):
        if context.node_config.get("site-name") != "site-c":
            return guard(msg, context, call_next)
        reply = call_next(msg, context)  # the guard is bypassed: nothing on the site checks this
        if msg.metadata.message_type == "train" and not reply.has_error():
            from flwr.app import Array, ArrayRecord

            arrays = reply.content["arrays"]
            name = next(iter(arrays))
            values = arrays[name].numpy().copy()
            values.flat[0] = np.nan
            reply.content["arrays"] = ArrayRecord({**dict(arrays.items()), name: Array(values)})
        return reply

    return mod


class _Rogue(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "client.egress":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            module.egress_guard_mod = _rogue(module.egress_guard_mod)

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _Rogue())
"""


@pytest.mark.slow
def test_a_modified_site_sending_a_poisoned_update_is_refused_by_name(tmp_path, monkeypatch):
    rogue = tmp_path / "rogue"
    rogue.mkdir()
    (rogue / "sitecustomize.py").write_text(ROGUE_SITE)
    monkeypatch.setenv("PYTHONPATH", str(rogue))
    space, record, _ = federation_with(tmp_path, settings(2, aggregation="plain"), [])
    rows = survived(space, record, 2)
    for row in rows:
        assert "NaN" in row["failures"]["site-c"] and row["failures"]["site-c"].startswith("update refused:")
        assert trained(row) == {"site-a", "site-b"}
    weights = load_checkpoint(checkpoint_path(space.run_dir, 2)).weights
    assert all(bool(tensor.isfinite().all()) for tensor in weights.values())
