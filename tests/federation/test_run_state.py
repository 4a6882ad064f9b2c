"""What a coordinator sees of a run: the state line, the round lines, the chaos plan."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from flwr.cli.utils import SUPERLINK_UNAVAILABLE_MESSAGE

from common.errors import FederationError, LaunchError
from common.run_record import RunRecord
from common.settings import RunSettings
from deploy.coordinator.run_state import describe_run
from deploy.coordinator.run_supervisor import RunSupervisor, _alive
from deploy.demo.chaos import SECURE_STAGES, plan_faults
from insite.cli.progress import participation, round_line

RECORD = {"status": "running", "rounds_done": 5, "rounds_planned": 13}


def test_state_line_says_what_the_run_waits_for():
    now = time.time()
    waiting = {
        "phase": "waiting",
        "round": 6,
        "since": now - 30,
        "updated": now,
        "detail": "round 6 waits for quorum: 1 of 3 sites online, 2 needed; site-b offline since 14:02:11",
    }
    line = describe_run(RECORD, waiting, now)
    assert line.startswith("round 6 waits for quorum") and "site-b offline since 14:02:11" in line
    running = {"phase": "round", "round": 6, "stage": "share-keys", "since": now, "updated": now, "attempt": 2}
    assert "running round 6 at share-keys" in describe_run(RECORD, running, now) and "attempt 2" in describe_run(
        RECORD, running, now
    )
    assert "last reported 60 s ago" in describe_run(RECORD, {**running, "updated": now - 60}, now)
    paused = {**RECORD, "status": "paused", "paused": "round 6 waited 900 s for quorum"}
    assert describe_run(paused, running, now) == "paused (5 of 13 rounds done): round 6 waited 900 s for quorum"


def test_round_line_names_the_dropped_site_and_its_return():
    dropped = {"sites": {"site-a": {"num_train": 4}, "site-c": {"num_train": 4}}, "dropped": {"site-b": "share-keys"}}
    back = {"sites": {name: {"num_train": 4} for name in ("site-a", "site-b", "site-c")}, "dropped": {}}
    assert "2 of 3 sites (site-b dropped at share-keys)" in participation(dropped, None)
    assert "3 of 3 sites (site-b rejoined)" in participation(back, dropped)
    assert participation(back, back) == ""
    late = {**back, "sites": {**back["sites"], "site-a": {"num_train": 4}}, "dropped": {"site-a": "unmask"}}
    assert "3 of 3 sites (site-a dropped at unmask, its update counted)" in participation(late, back)
    unscored = {**back, "global_dice": 0.5, "wall_s": 1.0, "round": 6, "sites": {**back["sites"], "site-a": {}}}
    assert "site-a -  site-b" in round_line(unscored, 13) and "nan" not in round_line(unscored, 13)


def test_chaos_plans_a_site_crash_then_a_coordinator_crash_inside_the_run():
    for seed in range(20):
        site, coordinator = plan_faults(13, ["site-a", "site-b", "site-c"], random.Random(seed))
        assert 2 <= site.round < coordinator.round <= 12 and site.stage in SECURE_STAGES
        assert site.target.startswith("supernode-site-") and coordinator.target == "serverapp"
    assert plan_faults(3, ["site-a"], random.Random(0)) == []


def test_a_killed_serverapp_left_as_a_zombie_counts_as_gone():
    """Flower's SuperExec reaps its ServerApp late; the supervisor must not wait for the state to go stale."""
    child = subprocess.Popen(["sleep", "60"])
    assert _alive(child.pid)
    os.kill(child.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _alive(child.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child.pid) and child.poll() is not None  # gone, and only now reaped


def test_the_run_lock_names_its_live_holder_and_is_free_once_it_dies(tmp_path):
    """The supervisor kills a lost run's ServerApp by this before it submits the next run."""
    from common.run_lock import held_by, run_lock

    assert held_by(tmp_path) is None  # no lock file yet
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom common.run_lock import run_lock\n"
            "with run_lock(__import__('pathlib').Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert held_by(tmp_path) == holder.pid
        with pytest.raises(FederationError, match=f"another ServerApp \\(pid {holder.pid}\\)"):
            with run_lock(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    assert held_by(tmp_path) is None  # the kernel let go of it with the process
    with run_lock(tmp_path):
        assert held_by(tmp_path) == os.getpid()


def test_since_is_when_this_round_or_stage_began(tmp_path, monkeypatch):
    from common.run_record import RunRecord
    from server.live_state import LiveState

    clock = iter([100.0, 105.0, 110.0, 120.0, 130.0, 140.0, 150.0, 160.0])
    monkeypatch.setattr("server.live_state.time.time", lambda: next(clock))
    state = LiveState(RunRecord(tmp_path))
    state.set("round", round=1, stage="training")
    state.set("round", round=2, stage="training")  # a new round at the same stage starts a new "since"
    assert RunRecord(tmp_path).state()["since"] == 110.0
    state.set("waiting", round=3, detail="1 of 3 sites online")
    state.set("waiting", round=3, detail="2 of 3 sites online")  # still the same wait
    assert RunRecord(tmp_path).state()["since"] == 130.0


class _RestartingSuperLink:
    """A SuperLink that answers, but whose first ``flwr run`` says it could not be reached (as under load)."""

    def __init__(self, first_failure: str, takes_the_run_anyway: bool = False) -> None:
        self.first_failure = first_failure
        self.takes_the_run_anyway = takes_the_run_anyway
        self.runs = {1}  # an earlier run, ended
        self.sent = 0
        self.processes = self

    def supervise(self) -> list[str]:
        return []

    def flwr(self, *args: str, timeout: float = 120.0) -> str:
        return "{}"  # `flwr list`: it answers

    def run_ids(self) -> set[int]:
        return set(self.runs)

    def submit(self, config: dict, app_dir: object = None) -> int:
        self.sent += 1
        if self.sent == 1:
            if self.takes_the_run_anyway:
                self.runs.add(7)
            raise LaunchError(self.first_failure)
        self.runs.add(8)
        return 8


def _submitted(tmp_path, superlink: _RestartingSuperLink) -> int:
    RunRecord(tmp_path / "run").create("t", RunSettings(), transport={})
    events: list[str] = []
    supervisor = RunSupervisor(superlink, tmp_path / "run", lambda row: None, events.append, timeout=60)  # type: ignore[arg-type]
    return supervisor.submit()


UNREACHABLE_REPLY = f"'flwr run' gave no run id: {SUPERLINK_UNAVAILABLE_MESSAGE}"


def test_a_run_a_restarting_superlink_could_not_take_is_sent_again(tmp_path):
    superlink = _RestartingSuperLink(UNREACHABLE_REPLY)
    assert _submitted(tmp_path, superlink) == 8 and superlink.sent == 2


def test_a_run_a_restarting_superlink_took_while_saying_it_could_not_is_followed_not_sent_twice(tmp_path):
    superlink = _RestartingSuperLink(UNREACHABLE_REPLY, takes_the_run_anyway=True)
    assert _submitted(tmp_path, superlink) == 7 and superlink.sent == 1 and superlink.runs == {1, 7}


def test_a_superlink_that_answers_and_refuses_the_run_is_not_asked_again(tmp_path):
    superlink = _RestartingSuperLink("'flwr run' failed (1): the app is not valid")
    with pytest.raises(LaunchError, match="not valid"):
        _submitted(tmp_path, superlink)
    assert superlink.sent == 1


def test_flwr_list_saying_it_could_not_reach_the_superlink_is_not_an_answer():
    """`flwr list --format json` exits 0 when it cannot reach the SuperLink; only its run list is an answer."""
    from deploy.coordinator.superlink import SuperLink

    link = object.__new__(SuperLink)  # only its `flwr list` reading is under test
    replies = {
        "down": json.dumps({"success": False, "error-message": SUPERLINK_UNAVAILABLE_MESSAGE}),
        "up": json.dumps({"success": True, "runs": [{"run-id": "42", "status": "finished:failed"}]}),
    }
    link.flwr = lambda *args, timeout=0: replies["down"]  # type: ignore[method-assign]
    with pytest.raises(LaunchError, match="unavailable"):
        link.run_ids()
    link.flwr = lambda *args, timeout=0: replies["up"]  # type: ignore[method-assign]
    assert link.run_ids() == {42}


def test_a_superlink_whose_run_list_does_not_come_is_waited_for_not_taken_for_a_refusal(tmp_path):
    class Down(_RestartingSuperLink):
        def run_ids(self) -> set[int]:
            raise LaunchError(f"'flwr list' gave no run list: {SUPERLINK_UNAVAILABLE_MESSAGE}")

    RunRecord(tmp_path / "run").create("t", RunSettings(), transport={})
    supervisor = RunSupervisor(Down(""), tmp_path / "run", lambda row: None, lambda text: None, timeout=60)  # type: ignore[arg-type]
    assert not supervisor.superlink_answers()
