"""Child processes that are supervised and always reaped: each in its own process group.

Flower's SuperLink and SuperNode start further processes (``flower-superexec``,
``flwr-serverapp``, ``flwr-clientapp``); killing only the parent leaves those behind. Every
process here gets its own session, and :meth:`ProcessSet.stop_all` signals whole groups:
SIGTERM, a grace period, then SIGKILL. ``ProcessSet`` is a context manager, so Ctrl-C or any
exception on the way out stops everything it started.

A process started with a :class:`RestartPolicy` (the SuperLink, the proxy, each SuperNode) that
dies is started again by :meth:`ProcessSet.supervise` with the same command, after a delay that
doubles with each restart in a row; only a process that keeps dying (``max_restarts`` within
``window_s``) ends the federation, naming it. One that had stayed up ``stable_s`` before it died
starts a fresh count, so a site that crashes once a day comes back after the first delay every
time. One crashed site costs the federation a round, not the run.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from common.errors import LaunchError

log = logging.getLogger(__name__)

# A SuperLink behind the proxy, and every SuperNode's ClientApp API, bind here only.
LOOPBACK = "127.0.0.1"


def _ephemeral_range_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on, chosen below the kernel's ephemeral range.

    Outgoing connections (SuperNodes poll several times a second) take ephemeral ports, so a port
    picked from that range can be taken between this check and the server's own bind (seen: a
    SuperNode's "Runtime HTTP API failed to start").
    """
    low, chooser = _ephemeral_range_start(), random.SystemRandom()
    for _ in range(200):
        port = chooser.randrange(20000, max(low, 20001))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def require_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            raise LaunchError(
                f"port {port} on {host} is already in use; choose another or stop what holds it"
            ) from None


def wait_for_port(host: str, port: int, process: ManagedProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.check_alive()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.settimeout(0.5)
            if probe.connect_ex((host, port)) == 0:
                return
        time.sleep(0.2)
    raise LaunchError(f"{process.name} did not open {host}:{port} within {timeout:.0f} s; see {process.log_path}")


@dataclass(frozen=True)
class RestartPolicy:
    """Restart a dead process after ``first_delay_s``, doubling up to ``max_delay_s``; give up after
    ``max_restarts`` restarts within ``window_s`` (a process that cannot stay up needs a person).
    A death after ``stable_s`` of running is a new fault, not the last one recurring: the count
    starts again (as supervisord's ``startsecs`` and systemd's start-limit interval do)."""

    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    max_restarts: int = 10
    window_s: float = 600.0
    stable_s: float = 60.0


@dataclass
class ManagedProcess:
    name: str
    popen: subprocess.Popen
    log_path: Path
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    restart: RestartPolicy | None = None
    restarts: list[float] = field(default_factory=list)  # monotonic times of recent restarts
    due: float | None = None  # when a dead process is started again
    started: float = field(default_factory=time.monotonic)  # when this incarnation was started

    @property
    def pid(self) -> int:
        return int(self.popen.pid)

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        code = self.popen.poll()
        if code is not None:
            raise LaunchError(f"{self.name} exited with code {code}; last lines of {self.log_path}:\n{self.tail()}")

    def stop(self, grace: float = 5.0) -> None:
        try:
            group = os.getpgid(self.popen.pid)
        except ProcessLookupError:
            group = None
        if group is not None:
            for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
                try:
                    os.killpg(group, sig)
                except ProcessLookupError:
                    break
                try:
                    self.popen.wait(timeout=wait)
                    # the leader is gone; children in the group may linger: kill them too
                    os.killpg(group, signal.SIGKILL)
                except (subprocess.TimeoutExpired, ProcessLookupError):
                    continue
                break
        try:
            self.popen.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            log.warning("%s (pid %d) did not exit", self.name, self.popen.pid)


def _spawn(name: str, argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as handle:
        try:
            return subprocess.Popen(
                argv,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        except FileNotFoundError:
            raise LaunchError(f"cannot start {name}: {argv[0]} not found (is the venv installed?)") from None


def _kill_group(process: ManagedProcess) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class ProcessSet:
    """Starts processes and stops every one of them on exit, in reverse order of start."""

    def __init__(self, log_dir: Path, env: dict[str, str]) -> None:
        self.log_dir = log_dir
        self.env = env
        self.processes: list[ManagedProcess] = []

    def start(
        self,
        name: str,
        argv: list[str],
        extra_env: dict[str, str] | None = None,
        restart: RestartPolicy | None = None,
    ) -> ManagedProcess:
        """Start ``argv`` as ``name``; with ``restart``, :meth:`supervise` restarts it when it dies."""
        env = {**self.env, **(extra_env or {})}
        log_path = self.log_dir / f"{name}.log"
        process = ManagedProcess(name, _spawn(name, argv, env, log_path), log_path, argv, env, restart)
        self.processes.append(process)
        log.info("started %s (pid %d), log %s", name, process.pid, log_path)
        return process

    def find(self, name: str) -> ManagedProcess:
        return next(process for process in self.processes if process.name == name)

    def supervise(self) -> list[str]:
        """Restart what died and may restart; what happened, in words. Raises when one may not.

        Called from every loop that waits on a federation (following a run, ``coord launch``,
        ``site join``), so a dead process is noticed within that loop's poll.
        """
        events = []
        now = time.monotonic()
        for process in self.processes:
            code = process.popen.poll()
            if code is None:
                continue
            policy = process.restart
            if policy is None:
                process.check_alive()  # raises, naming it
            assert policy is not None
            if process.due is None:
                process.restarts = [t for t in process.restarts if now - t < policy.window_s]
                if now - process.started >= policy.stable_s:
                    process.restarts.clear()
                if len(process.restarts) >= policy.max_restarts:
                    raise LaunchError(
                        f"{process.name} exited with code {code} and was restarted {len(process.restarts)} "
                        f"times in {policy.window_s:.0f} s; giving up. Last lines of {process.log_path}:\n"
                        f"{process.tail()}"
                    )
                delay = min(policy.first_delay_s * 2 ** len(process.restarts), policy.max_delay_s)
                process.due = now + delay
                events.append(f"{process.name} exited with code {code}; restarting it in {delay:.0f} s")
                _kill_group(process)  # children of the dead leader would hold its ports
            elif now >= process.due:
                process.popen = _spawn(process.name, process.argv, process.env, process.log_path)
                process.started = now
                process.restarts.append(now)
                process.due = None
                events.append(f"{process.name} restarted (pid {process.pid}, restart {len(process.restarts)})")
        for event in events:
            log.warning("%s", event)
        return events

    def check_all_alive(self) -> None:
        for process in self.processes:
            process.check_alive()

    def stop_all(self) -> None:
        while self.processes:
            self.processes.pop().stop()
        if "FLWR_HOME" in self.env:
            strays = kill_strays("FLWR_HOME", self.env["FLWR_HOME"])
            if strays:
                log.info("killed %d stray Flower process(es)", strays)

    def __enter__(self) -> ProcessSet:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop_all()


def processes_with(variable: str, value: str) -> list[int]:
    """Every live process (zombies aside) whose environment has ``variable=value``."""
    marker = f"{variable}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def kill_strays(variable: str, value: str) -> int:
    """SIGKILL every process whose environment has ``variable=value``; returns how many.

    Flower's SuperExec starts ``flwr-serverapp``/``flwr-clientapp`` in sessions of their own, so
    they escape process-group signals. Every Flower process of one federation carries that
    federation's ``FLWR_HOME``, which identifies the strays after the group stop.
    """
    killed = 0
    for pid in processes_with(variable, value):
        try:
            os.kill(pid, signal.SIGKILL)
            killed += 1
        except ProcessLookupError:
            continue
    return killed


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def wait_until_stopped(processes: ProcessSet, on_event: Callable[[str], None], poll: float = 1.0) -> None:
    """Supervise until Ctrl-C or SIGTERM; raise :class:`LaunchError` (naming it) if a child cannot stay up."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        while True:
            for event in processes.supervise():
                on_event(event)
            time.sleep(poll)
    except KeyboardInterrupt:
        log.info("stop requested")
    finally:
        signal.signal(signal.SIGTERM, previous)
