"""``insite demo --chaos``: faults made on purpose while the demo's federation trains.

A background thread watches what the coordinator is doing (the run folder's ``state.json``) and,
at moments drawn at random: kills one random site's SuperNode (SIGKILL, whole process group) at a
random SecAgg+ stage of one round, and later kills the coordinator's ServerApp. Nothing is helped
back up by the chaos itself: the SuperNode is restarted by the demo's process supervisor, the
run is continued by the run supervisor, and the per-round lines show what it cost.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from common.background import Background
from common.run_record import RunRecord
from deploy.host.processes import ProcessSet

log = logging.getLogger(__name__)

# The SecAgg+ stages every round shows: a round's set-up and key shares show as stages of their
# own only in the first round and when its sites changed; otherwise they travel inside the
# previous round's masked-update and unmasking messages (server/secure_overlap.py).
SECURE_STAGES = ("masked-update", "unmask")
POLL_S = 0.2
# A ClientApp killed before it has claimed its message is started again by Flower's SuperExec, as
# if nothing happened; the fault worth making is one at work. A warm task claims its message within
# milliseconds of its start (deploy/site/warm_clientapp.py).
CLIENTAPP_AT_WORK_S = 1.0


@dataclass(frozen=True)
class Fault:
    """One planned fault: what to kill, in which round, at which stage of it."""

    round: int
    stage: str
    target: str  # "supernode-<site>", "clientapp-<site>", "superexec-<site>", "serverapp", "superlink" or "proxy"
    action: signal.Signals = signal.SIGKILL  # SIGSTOP makes a straggler, SIGCONT lets it go on


def plan_faults(rounds: int, sites: list[str], rng: random.Random) -> list[Fault]:
    """A site crash in the first half of the run, a ServerApp crash in the second half.

    Round 1 and the last round are spared so the run shows a normal round on both sides.
    """
    if rounds < 4:
        return []
    site_round = rng.randint(2, max(2, rounds // 2))
    coordinator_round = rng.randint(min(site_round + 1, rounds - 1), rounds - 1)
    return [
        Fault(site_round, rng.choice(SECURE_STAGES), f"supernode-{rng.choice(sites)}"),
        Fault(coordinator_round, rng.choice(SECURE_STAGES), "serverapp"),
    ]


@dataclass
class Chaos:
    """``with Chaos(...)``: the planned faults happen while the block runs; ``done`` says what struck when."""

    processes: ProcessSet
    record: RunRecord
    faults: list[Fault]
    on_event: Callable[[str], None]
    done: list[tuple[float, Fault]] = field(default_factory=list)  # (wall time, fault) of each strike
    _background: Background | None = None

    def __enter__(self) -> Chaos:
        plan = "; ".join(f"round {f.round}: kill {f.target} at {f.stage}" for f in self.faults)
        self.on_event(f"chaos planned: {plan or 'nothing (too few rounds)'}")
        self._background = Background("chaos", self._watch).__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._background is not None:
            self._background.__exit__(kind, error, trace)

    def _watch(self, stop: threading.Event) -> None:
        pending = list(self.faults)
        while pending and not stop.wait(POLL_S):
            state = self.record.state() or {}
            fault = pending[0]
            phase, round_number = state.get("phase"), int(state.get("round") or 0)
            at = state.get("stage") if phase == "round" else phase  # a stage, or "waiting"
            if round_number == fault.round and at == fault.stage:
                if self._strike(fault, state):
                    pending.pop(0)
            elif round_number > fault.round:
                pending.pop(0)  # that round passed at a stage it never reached (e.g. plain aggregation)

    def _strike(self, fault: Fault, state: dict) -> bool:
        """Signal the fault's target; False while there is nothing to signal yet (try again next poll)."""
        try:
            if fault.target == "serverapp":
                os.kill(int(state["pid"]), fault.action)
            elif fault.target.startswith(("clientapp-", "superexec-")):
                part, site = fault.target.split("-", 1)
                supernode = self.processes.find(f"supernode-{site}").pid
                if part == "clientapp":  # the stage's own, not the last stage's still on its way out, once at work
                    now = time.time()
                    pids = [
                        pid
                        for pid in clientapps_of(supernode)
                        if float(state["since"]) <= started_at(pid) <= now - CLIENTAPP_AT_WORK_S
                    ]
                else:
                    pids = superexecs_of(supernode)
                if not pids:  # the stage's ClientApp is started a moment after the stage begins
                    return False
                for pid in pids:
                    os.kill(pid, fault.action)
            else:
                os.killpg(self.processes.find(fault.target).pid, fault.action)
        except (ProcessLookupError, StopIteration, KeyError, ValueError) as error:
            log.warning("chaos: could not signal %s: %s", fault.target, error)
            return True
        what = f"chaos: {fault.action.name} to {fault.target} in round {fault.round} at {fault.stage}"
        self.done.append((time.time(), fault))
        self.on_event(what)
        return True


def _process_table() -> tuple[dict[int, int], dict[int, str]]:
    """Each process's parent and command line."""
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            parents[int(entry.name)] = int(fields[1])
            commands[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
    return parents, commands


def started_at(pid: int) -> float:
    """When process ``pid`` started, as a wall-clock time (to the kernel's 10 ms tick); 0 if it is gone."""
    try:
        ticks = int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[19])
    except OSError:
        return 0.0
    age = float(Path("/proc/uptime").read_text().split()[0]) - ticks / os.sysconf("SC_CLK_TCK")
    return time.time() - age


def superexecs_of(supernode: int, commands: dict[int, str] | None = None) -> list[int]:
    """The SuperExec (ClientApp launcher) a SuperNode started: it names its parent on its command line."""
    table = _process_table()[1] if commands is None else commands
    return [pid for pid, command in table.items() if f"--parent-pid {supernode}" in command]


def clientapps_of(supernode: int) -> list[int]:
    """The processes running a SuperNode's ClientApps: the warm worker's task processes, if it has a worker.

    A task forked by the site's warm worker (deploy/site/warm_clientapp.py) is the process that runs
    the app; the ``flwr-clientapp`` SuperExec started for it only relays. Without a worker, the
    ``flwr-clientapp`` processes run the app themselves (they run in sessions of their own).
    """
    parents, commands = _process_table()

    def descends(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == supernode:
                return True
        return False

    workers = {
        pid
        for pid, command in commands.items()
        if "deploy.site.warm_clientapp" in command and parents.get(pid) == supernode
    }
    if workers:
        return [pid for pid, parent in parents.items() if parent in workers]
    superexecs = set(superexecs_of(supernode, commands))
    return [
        pid
        for pid, command in commands.items()
        if "flwr-clientapp" in command and (descends(pid) or parents.get(pid) in superexecs)
    ]
