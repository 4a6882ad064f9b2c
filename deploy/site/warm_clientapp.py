"""Warm ClientApp worker: each message's ClientApp forks from a process that has already imported flwr, torch and MONAI.

Why. Flower's SuperExec starts a new ``flwr-clientapp`` interpreter for every message, and each
one imports flwr, torch and MONAI before it can read a byte of the message: 3-5 s of CPU on a quiet
2-core machine, 15 s under load, four times per SecAgg+ round at every site (issue 14). Flower's
own warm executors exist only for Kubernetes.

How, on Flower's own process boundary (nothing in Flower is changed):

- The **worker** (``python -m deploy.site.warm_clientapp NAME``), started by the SuperNode launcher,
  imports the heavy libraries once (:data:`PRELOAD`), never the app's own packages (``client``,
  ``common``, ``server``: the approved bundle's copies must be the ones that run), and listens on a
  Unix socket in the abstract namespace that answers only its own user (``SO_PEERCRED``).
- The **relay** is what SuperExec starts as ``flwr-clientapp`` (the gate script of
  :mod:`deploy.site.clientapp_gate`): a few standard-library lines that hand the worker the
  process's arguments, environment, working directory and standard streams, forward the signals it
  receives to the task, and exit with the task's status.
- For each message the worker **forks a task process** that runs the app-approval gate and
  Flower's ClientApp exactly as a cold ``flwr-clientapp`` would, from the worker's pristine
  state: every message still starts clean, and a crash in one cannot touch the next.

Faults. A task killed mid-message ends its relay with 128 + the signal, as a killed cold ClientApp
would (a dropped site for that round). A killed relay has its task killed. A killed worker takes
its running tasks with it (``PR_SET_PDEATHSIG``), their relays end with an error, and the launcher
starts a new worker; a relay that finds no worker, or none that answers within
:data:`HANDSHAKE_S`, runs its message cold in its own process. No message runs twice: the relay
falls back only before any task process exists for it.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import json
import logging
import os
import selectors
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

SOCKET_ENV = "INSITE_WARM_CLIENTAPP_SOCKET"  # the worker's abstract socket name, set by the launcher
# A fork takes milliseconds; a worker still importing (it listens from its first second) takes up to
# ~20 s on a loaded 2-core machine. Past this the relay runs its message cold instead.
HANDSHAKE_S = 60.0
# Between a task's end and the worker's report of its exit status.
EXIT_REPORT_S = 10.0
# How long a task's own threads may outlive its app: Flower's exit grace for a ClientApp process
# (flwr.supercore.constant.FORCE_EXIT_TIMEOUT_SECONDS), after which it ends the process itself.
THREADS_S = 5.0
# What a ClientApp message imports besides the app's own packages: flwr's runtime and the
# ClientApp's ML stack, including what torch imports only at a model's first optimiser step
# (torch._dynamo and with it sympy: 3-9 s here), and what Flower's runtime imports only once it
# connects to the SuperNode (httpx's transport: 0.02 s on a quiet machine, up to 0.2 s under a
# round's load, twice per SecAgg+ round at each site). Imports only: nothing runs that could
# start a native thread pool before the fork. tests/ops/test_warm_clientapp.py trains a round
# after this preload and checks that nothing is left to import.
PRELOAD = (
    "flwr.supernode.runtime.run_clientapp",
    "httpcore",  # httpx's transport (37 modules), imported when a task connects to its SuperNode
    "flwr.clientapp",
    "flwr.client.mod",
    "deploy.site.clientapp_gate",
    "pydantic",
    "numpy",
    "scipy.ndimage",
    "torch",
    "torch._dynamo",
    "torch.profiler",
    "torch.profiler._cupti_monitor",
    "torch.utils.serialization",
    "monai.data",
    "monai.inferers",
    "monai.losses",
    "monai.metrics",
    "monai.networks.nets",
    "monai.transforms",
    "nibabel",
    "SimpleITK",
)
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_MAX_REQUEST = 1 << 20  # arguments and environment of one flwr-clientapp process

log = logging.getLogger(__name__)

Task = Callable[[], None]


class WorkerUnavailable(Exception):
    """No task process was started for this message: the relay may run it cold."""


def gated_clientapp() -> None:
    """The task: insite's app-approval gate in front of Flower's ``flwr-clientapp`` (argv as Flower gave it)."""
    from deploy.site.clientapp_gate import main  # noqa: PLC0415  (flwr: not on the relay's path)

    main()


# ---------------------------------------------------------------------------------------- relay


def relay(task: Task = gated_clientapp) -> NoReturn:
    """``flwr-clientapp``: run this message in a task forked by the site's warm worker, else cold here."""
    name = os.environ.get(SOCKET_ENV)
    if name:
        try:
            connection, pid = _hand_over(name)
        except WorkerUnavailable as reason:
            print(f"insite: warm ClientApp worker unavailable ({reason}); running this message cold", file=sys.stderr)
        else:
            sys.exit(_await_task(connection, pid))
    task()
    sys.exit(0)


def _hand_over(name: str) -> tuple[socket.socket, int]:
    """Send this process's arguments, environment, directory and streams; the task process's pid."""
    request = json.dumps({"argv": sys.argv, "env": dict(os.environ), "cwd": os.getcwd()}).encode()
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    connection.settimeout(HANDSHAKE_S)
    try:
        connection.connect("\0" + name)
        socket.send_fds(connection, [request], [0, 1, 2])
        reply = connection.recv(4096)
        pid = int(json.loads(reply)["pid"])
    except TimeoutError:
        connection.close()
        raise WorkerUnavailable(f"no answer from worker '{name}' within {HANDSHAKE_S:.0f} s") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        connection.close()
        raise WorkerUnavailable(f"worker '{name}': {type(error).__name__}: {error}") from None
    return connection, pid


def _await_task(connection: socket.socket, pid: int) -> int:
    """The task's exit status, as a process's exit code; signals to the relay go to the task.

    Bounded by the task's own life: Flower's task heartbeat and parent-process monitor end it when
    its SuperNode goes, and its end is seen here through a pidfd even if the worker never reports.
    """
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda received, frame: _signal_task(pid, received))
    connection.settimeout(None)
    try:
        task_end = os.pidfd_open(pid)
    except ProcessLookupError:  # already over: the worker's report is on its way
        task_end = None
    waiting = selectors.DefaultSelector()
    waiting.register(connection, selectors.EVENT_READ)
    if task_end is not None:
        waiting.register(task_end, selectors.EVENT_READ)
    deadline = None
    while True:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready = {key.fileobj for key, _ in waiting.select(timeout)}
        if connection in ready:
            report = connection.recv(4096)
            if not report:
                print("insite: the warm ClientApp worker went away during this message", file=sys.stderr)
                return 1
            code = int(json.loads(report)["exit"])
            if code < 0:
                print(f"insite: ClientApp task {pid} ended by {signal.Signals(-code).name}", file=sys.stderr)
            return code if code >= 0 else 128 - code
        if task_end in ready:
            waiting.unregister(task_end)
            deadline = time.monotonic() + EXIT_REPORT_S
        elif deadline is not None and time.monotonic() >= deadline:
            print(
                f"insite: task {pid} ended but its worker reported no status in {EXIT_REPORT_S:.0f} s", file=sys.stderr
            )
            return 1


def _signal_task(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


# --------------------------------------------------------------------------------------- worker


@dataclass
class _Running:
    """A task process and the relay connection that waits for it."""

    pid: int
    connection: socket.socket
    ended: int  # pidfd: readable once the task has ended
    relay_gone: bool = False


class _Worker:
    """The accept-and-fork loop: one thread, no timers, so a fork never copies a lock held elsewhere."""

    def __init__(self, listener: socket.socket, task: Task) -> None:
        self.listener = listener
        self.task = task
        self.events = selectors.DefaultSelector()
        self.events.register(listener, selectors.EVENT_READ)
        self.running: dict[int, _Running] = {}  # by pidfd and by connection fd

    def serve_while(self, parent: int) -> None:
        while os.getppid() == parent:
            for key, _ in self.events.select(timeout=5.0):  # 5 s: also notice a parent that is gone
                if key.fileobj is self.listener:
                    self.accept()
                else:
                    fd = key.fd
                    entry = self.running[fd]
                    if fd == entry.ended:
                        self.report(entry)
                    else:
                        self.check_relay(entry)

    def accept(self) -> None:
        connection, _ = self.listener.accept()
        fds: list[int] = []
        try:
            uid = struct.unpack("3i", connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[2]
            if uid != os.getuid():
                raise PermissionError(f"a process of user {uid} asked for a task; only user {os.getuid()} may")
            connection.settimeout(5.0)  # the relay sends its request right after connecting
            message, fds, _, _ = socket.recv_fds(connection, _MAX_REQUEST, 3)
            request = json.loads(message)
            connection.setblocking(False)  # from here on read only when the selector says so
            if len(fds) != 3 or _closed(connection):
                raise ConnectionError("the relay is gone, or sent no standard streams")
        except (OSError, ValueError) as error:
            log.warning("request refused: %s", error)
            for fd in fds:
                os.close(fd)
            connection.close()
            return
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            self.events.close()
            self.listener.close()
            for entry in {id(e): e for e in self.running.values()}.values():
                entry.connection.close()
                os.close(entry.ended)
            connection.close()
            _run_task(self.task, request, fds)
        for fd in fds:
            os.close(fd)
        entry = _Running(pid, connection, os.pidfd_open(pid))
        try:
            connection.send(json.dumps({"pid": pid}).encode())
        except OSError:  # the relay gave up meanwhile and may run the message cold: this copy must not run
            os.kill(pid, signal.SIGKILL)
        self.running[entry.ended] = self.running[connection.fileno()] = entry
        self.events.register(entry.ended, selectors.EVENT_READ)
        self.events.register(connection, selectors.EVENT_READ)

    def report(self, entry: _Running) -> None:
        """The task ended: its exit status to its relay (a negative status: the signal that ended it)."""
        _, status = os.waitpid(entry.pid, 0)
        with contextlib.suppress(OSError):
            entry.connection.send(json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode())
        self.events.unregister(entry.ended)
        del self.running[entry.ended], self.running[entry.connection.fileno()]
        if not entry.relay_gone:
            self.events.unregister(entry.connection)
        os.close(entry.ended)
        entry.connection.close()

    def check_relay(self, entry: _Running) -> None:
        """A relay's connection is readable only when it closes: the relay was killed, so goes its task."""
        if entry.connection.recv(1) == b"":
            entry.relay_gone = True
            self.events.unregister(entry.connection)
            with contextlib.suppress(ProcessLookupError):
                os.kill(entry.pid, signal.SIGKILL)


def _closed(connection: socket.socket) -> bool:
    """Whether the peer has closed ``connection`` (a non-blocking one), without consuming anything it sent."""
    try:
        return connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False


def serve(name: str, parent: int, task: Task = gated_clientapp, preload: tuple[str, ...] = PRELOAD) -> NoReturn:
    """Listen on ``name``, import ``preload``, then fork one task process per relay, while ``parent`` runs."""
    _die_with_parent()
    if os.getppid() != parent:  # it ended before the line above could tie this process to it
        os._exit(0)
    # The worker lives exactly as long as its SuperNode (above): a stop signal to the SuperNode's
    # process group is for the SuperNode, whose end then ends this process.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind("\0" + name)
    listener.listen(64)  # relays that come while the imports below run wait in the backlog
    started = time.monotonic()
    for module in preload:
        try:
            importlib.import_module(module)
        except ImportError as error:  # a library release that moved a module: its tasks import what they need
            log.warning("not preloaded: %s (%s)", module, error)
    log.info(
        "'%s' ready in %.1f s (%d modules preloaded)",
        name,
        time.monotonic() - started,
        len(preload),
    )
    _Worker(listener, task).serve_while(parent)
    log.info("'%s': its SuperNode is gone; stopping", name)
    os._exit(0)


def _run_task(task: Task, request: dict, fds: list[int]) -> NoReturn:
    """In the forked child: become the relay's ``flwr-clientapp`` process and run ``task``."""
    code = 1
    try:
        _die_with_parent()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # as in a new process (the worker ignores them)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        sys.argv = list(request["argv"])
        _reseed()
        task()
        code = 0
    except SystemExit as end:
        code = end.code if isinstance(end.code, int) else (0 if end.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        _await_threads(THREADS_S)
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)  # never the worker's own cleanup (its sockets, its atexit handlers)


def _await_threads(limit_s: float) -> None:
    """As an interpreter does at its end: the task's other non-daemon threads finish first, within ``limit_s``.

    A ClientApp may leave work running after its reply (client/incoming_score.py); a cold
    ``flwr-clientapp`` waits for it the same way, within Flower's exit grace.
    """
    deadline = time.monotonic() + limit_s
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))


def _reseed() -> None:
    """Fresh random state per task, as a new interpreter has (a fork copies the worker's)."""
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    if "torch" in sys.modules:
        sys.modules["torch"].seed()


def _die_with_parent() -> None:
    """Linux: this process gets SIGKILL when the process that started it ends."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def main() -> None:
    """``python -m deploy.site.warm_clientapp NAME PARENT_PID``: the worker, as the SuperNode launcher starts it."""
    # This module's logger only: the root logger stays as a new interpreter has it, for the tasks.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s insite warm ClientApp worker: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    if len(sys.argv) != 3 or not sys.argv[2].isdigit():
        sys.exit("usage: python -m deploy.site.warm_clientapp SOCKET_NAME PARENT_PID")
    serve(sys.argv[1], int(sys.argv[2]))


if __name__ == "__main__":
    main()
