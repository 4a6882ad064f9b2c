"""The run supervisor: submits a run, follows it round by round, and continues it after a crash.

A Flower run does not survive its coordinator: a SuperLink restart ends it ``finished:failed``, and
a killed ServerApp leaves it behind. Nobody should have to notice and type ``resume``. The
supervisor watches the ServerApp through the run folder (``state.json``, refreshed every few
seconds with its pid) and the SuperLink through its own processes and the Control API; when the
coordinator is gone it stops what is left of the old Flower run and submits a new one that
continues from the last checkpoint. At most the round in flight is redone; round numbers, metrics
and checkpoints stay consistent (common/run_record.py), and only one ServerApp can hold a run
folder (common/run_lock.py). After ``faults.coordinator_restarts`` such restarts it gives up, naming
why, since a coordinator that cannot stay up needs a person.

It ends when the run is completed, or paused (too few sites for too long: continue it later with
the same command), and raises on a failure the ServerApp reported (a bad setting, a model no
strategy can aggregate): running that again would fail again.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from flwr.cli.utils import SUPERLINK_UNAVAILABLE_MESSAGE

from common.errors import FederationError, LaunchError
from common.run_lock import held_by
from common.run_record import RunRecord, latest_checkpoint, resume_point
from common.settings import to_run_config
from deploy.coordinator.superlink import SuperLink
from deploy.host.flower import CONNECTION

log = logging.getLogger(__name__)
T = TypeVar("T")

POLL_S = 0.5
STALE_S = 20.0  # the ServerApp refreshes state.json every 2 s; this much silence means it is gone
START_S = 180.0  # how long a submitted run may take to start its ServerApp
STATUS_EVERY_S = 20.0  # `flwr list` is a whole Python process: a backstop, not the main signal
READY_S = 180.0  # how long a restarted SuperLink may take to answer again
# What `flwr` says (its first sentence) when it could not reach the SuperLink, or could not tell.
UNREACHABLE = SUPERLINK_UNAVAILABLE_MESSAGE.split(".")[0]
SEND_TRIES = 3  # times a run is sent to a SuperLink that answers but says it could not take it


@dataclass(frozen=True)
class Ending:
    """How one Flower run of the supervised run ended: done, paused, or the coordinator was lost."""

    kind: str  # "completed" | "paused" | "lost"
    reason: str = ""


def _alive(pid: object) -> bool:
    """Whether the ServerApp process still runs.

    A killed ServerApp stays a zombie until Flower's SuperExec reaps it, and a zombie still answers
    signal 0; without the /proc check its death was noticed only when its state went stale (20 s).
    """
    try:
        number = int(str(pid))
        os.kill(number, 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{number}/stat").read_text()
    except FileNotFoundError:
        return not Path("/proc/self/stat").exists()  # gone, unless there is no /proc to ask at all
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")  # the state follows the command name


class RunSupervisor:
    """Sees one run folder's run through to its end, over as many Flower runs as it takes."""

    def __init__(
        self,
        superlink: SuperLink,
        run_dir: Path,
        on_round: Callable[[dict], None],
        on_event: Callable[[str], None],
        timeout: float,
        app_dir: Path | None = None,
    ) -> None:
        self.superlink = superlink
        self.record = RunRecord(run_dir)
        self.settings = self.record.settings()
        self.on_round = on_round
        self.on_event = on_event
        self.deadline = time.monotonic() + timeout
        self.app_dir = app_dir
        self.printed: set[int] = set()
        self.seen_lines = 0
        self.run_id: int | None = None

    def run(self) -> dict:
        """The final run record (status ``completed`` or ``paused``)."""
        self.run_id = self.submit()
        restarts = 0
        while True:
            ending = self.follow(self.run_id)
            if ending.kind != "lost":
                return self.record.read()
            if restarts >= self.settings.faults.coordinator_restarts:
                raise FederationError(
                    f"the coordinator was lost {restarts + 1} times ({ending.reason}); giving up. Continue the "
                    f"run when it is fixed: 'insite coord resume {self.record.run_dir}'"
                )
            restarts += 1
            self.bury(self.run_id)
            done = self.record.read().get("rounds_done", 0)
            checkpoint = latest_checkpoint(self.record.run_dir)
            start = f"from {checkpoint.name}" if checkpoint else "from the start"
            self.on_event(
                f"coordinator lost ({ending.reason}); continuing the run {start} "
                f"(restart {restarts} of at most {self.settings.faults.coordinator_restarts})"
            )
            self.record.update(
                coordinator_restarts=[
                    *self.record.read().get("coordinator_restarts", []),
                    {
                        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        "flower_run": self.run_id,
                        "reason": ending.reason,
                        "rounds_done": done,
                    },
                ]
            )
            self.run_id = self.submit()

    def submit(self) -> int:
        """A new Flower run that starts where the run folder stands: fresh, or from its last checkpoint.

        A SuperLink that is down (restarted by its supervisor, perhaps right after it answered) is
        waited for, up to ``READY_S``; a refusal by a SuperLink that is up is raised at once.
        """
        run_dir = self.record.run_dir
        if latest_checkpoint(run_dir) is None:
            config = to_run_config(self.settings, run_dir)
        else:
            _, done, checkpoint = resume_point(run_dir)
            config = to_run_config(self.settings, run_dir, done, checkpoint)
        run_id = self.once_superlink_is_up(lambda: self.send(config), "take the run")
        self.on_event(f"submitted Flower run {run_id}")
        return run_id

    def send(self, config: dict[str, str | int]) -> int:
        """``flwr run``, sent again while a SuperLink that answers says it could not take it.

        Seen under load right after a SuperLink restart: ``flwr run`` answered that the SuperLink
        was unavailable, and ``flwr list`` answered a moment later. Whether that SuperLink took the
        run is then unknown, so the runs it holds are compared with those from before: a run it
        took is followed, never sent twice. A SuperLink that does not answer at all raises here,
        and :meth:`once_superlink_is_up` waits for it.
        """
        for _ in range(SEND_TRIES - 1):
            known = self.superlink.run_ids()
            try:
                return self.superlink.submit(config, self.app_dir)
            except LaunchError as error:
                if UNREACHABLE not in str(error):
                    raise
                taken = self.superlink.run_ids() - known
                if len(taken) > 1:
                    raise LaunchError(f"the SuperLink took {len(taken)} new runs at once: {sorted(taken)}") from None
                if taken:
                    return taken.pop()
                self.on_event(f"the SuperLink could not take the run yet ({UNREACHABLE.lower()}); sending it again")
                time.sleep(2.0)
        return self.superlink.submit(config, self.app_dir)

    def follow(self, run_id: int) -> Ending:
        started = last_status = time.monotonic()
        superlink_back: float | None = None
        while True:
            for event in self.superlink.processes.supervise():
                self.on_event(event)
                if event.startswith("superlink restarted"):
                    superlink_back = time.monotonic()
            self.report_rounds()
            record = self.record.read()
            status = record.get("status")
            if status == "completed" and run_id in record.get("flower_runs", []):
                return Ending("completed")
            if status == "paused" and record.get("paused_run") == run_id:
                return Ending("paused", str(record.get("paused")))
            if status == "failed" and record.get("failed_run") == run_id:
                raise FederationError(f"run {run_id} failed: {record.get('failure')}")
            now = time.monotonic()
            if superlink_back is not None:  # Flower ends every run a SuperLink restart cuts off
                return Ending("lost", "the SuperLink restarted")
            state = self.record.state() or {}
            if state.get("flower_run") == run_id:
                if not _alive(state.get("pid")):
                    return Ending("lost", f"the ServerApp (pid {state.get('pid')}) is gone")
                if time.time() - float(state.get("updated", 0)) > STALE_S:
                    return Ending("lost", f"the ServerApp (pid {state.get('pid')}) stopped reporting")
            elif now - started > START_S:
                return Ending("lost", f"Flower run {run_id} did not start its ServerApp within {START_S:.0f} s")
            if now - last_status > STATUS_EVERY_S:
                last_status = now
                flower = self.flower_status(run_id)
                if flower.startswith("finished") and not flower.endswith("completed"):
                    self.report_rounds()
                    record = self.record.read()
                    if record.get("status") == "failed" and record.get("failed_run") == run_id:
                        raise FederationError(f"run {run_id} failed: {record.get('failure')}")
                    return Ending("lost", f"Flower run {run_id} ended '{flower}'")
            if now > self.deadline:
                raise FederationError(f"run {run_id} did not finish in time; see {self.superlink.processes.log_dir}")
            time.sleep(POLL_S)

    def flower_status(self, run_id: int) -> str:
        try:
            return self.superlink.flower_status(run_id)
        except LaunchError as error:  # the SuperLink is down or restarting: not an ending by itself
            log.info("no run status from the SuperLink: %s", error)
            return "unknown"

    def report_rounds(self) -> None:
        """Each round once, as it closes (a round redone after a restart is not shown again)."""
        path = self.record.run_dir / "rounds.jsonl"
        if not path.exists():
            return
        lines = path.read_text(encoding="utf-8").splitlines()
        for line in lines[self.seen_lines :]:
            row = json.loads(line)
            if row["round"] not in self.printed:
                self.printed.add(row["round"])
                self.on_round(row)
        self.seen_lines = len(lines)

    def bury(self, run_id: int) -> None:
        """End what is left of a lost Flower run before the next is submitted, so none races it.

        Its ServerApp (any process still holding the run folder's lock) is killed, and the run is
        stopped at the SuperLink, waiting up to ``READY_S`` for a restarting SuperLink: a run left
        pending there would be started by the SuperLink once it is back, beside its successor.
        """
        holder = held_by(self.record.run_dir)
        if holder is not None and _alive(holder):
            try:
                os.kill(holder, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.once_superlink_is_up(
                lambda: self.superlink.flwr("stop", str(run_id), CONNECTION, timeout=60), f"stop run {run_id}"
            )
        except LaunchError as error:  # refused by a SuperLink that is up: the run has already ended there
            log.info("flwr stop %d: %s", run_id, error)

    def once_superlink_is_up(self, action: Callable[[], T], what: str) -> T:
        """``action()``, tried again while the SuperLink is down (its supervisor restarts it), up to ``READY_S``.

        A ``LaunchError`` from a SuperLink that answers is raised at once: trying again would not help.
        """
        deadline = time.monotonic() + READY_S
        said = False
        while True:
            try:
                return action()
            except LaunchError as error:
                if self.superlink_answers():
                    raise
                if time.monotonic() > deadline:
                    raise FederationError(
                        f"the SuperLink did not come back within {READY_S:.0f} s to {what}: {error}"
                    ) from None
                if not said:
                    self.on_event(f"waiting up to {READY_S:.0f} s for the SuperLink to come back to {what}")
                    said = True
                time.sleep(2.0)

    def superlink_answers(self) -> bool:
        """Whether the SuperLink answers its Control API (after its supervisor has had its say)."""
        for event in self.superlink.processes.supervise():
            self.on_event(event)
        try:  # `flwr list --format json` exits 0 with "success": false when it cannot reach the SuperLink
            self.superlink.run_ids()
        except LaunchError:
            return False
        return True
