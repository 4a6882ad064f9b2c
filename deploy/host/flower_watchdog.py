"""A Flower service process ends, so that its supervisor restarts it, when a part of it dies.

Why. A SuperLink or SuperNode is one process with parts that Flower starts once and never again:
the SuperNode's heartbeat thread, and the SuperExec child that launches every ServerApp or
ClientApp. When one of them dies, Flower keeps the rest running, and the process looks healthy to
anyone watching its pid while it can no longer take part. Measured in a chaos demo under load: a
SuperLink answered HTTP 500 ("database is locked") for a few seconds; each SuperNode's heartbeat
thread died on that 500 (Flower retries only 502/503/504 there), and the SuperLink's SuperExec
exited on the same error. All three sites then stayed up but offline for good, and the run waited
for a quorum that could not come back.

What. The launchers (``deploy/site/supernode_launcher.py``, ``deploy/coordinator/superlink_launcher.py``)
call :func:`watch` before handing over to Flower. A thread that ends with an exception, or a
SuperExec that exits with an error, then ends the whole process with :data:`PART_DIED_EXIT_CODE`,
naming the part, and the supervisor (insite's, or systemd's ``Restart=on-failure``) restarts it.
A SuperExec that exits while this process is itself shutting down (a signal reaches both; Flower
then exits with a non-zero "graceful" code) is left alone: the watch waits :data:`SHUTDOWN_GRACE_S`
and ends the process only if it is still running by then.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from types import ModuleType
from typing import Any

#: EX_SOFTWARE: the process ended itself because a part of it died; its supervisor restarts it.
PART_DIED_EXIT_CODE = 70
#: A SuperNode or SuperLink that was told to stop is gone well within this (its graceful exit
#: deactivates the node and stops its servers).
SHUTDOWN_GRACE_S = 10.0


def _end_process(what: str) -> None:
    print(f"insite: {what}; ending this process so that its supervisor restarts it", file=sys.stderr, flush=True)
    os._exit(PART_DIED_EXIT_CODE)  # the threads that are left would keep a normal exit waiting


def _on_thread_exception(args: threading.ExceptHookArgs) -> None:
    thread = args.thread.name if args.thread is not None else "a thread"
    threading.__excepthook__(args)  # the usual "Exception in thread ..." traceback first
    _end_process(f"{thread} died: {args.exc_type.__name__}: {args.exc_value}")


class _WatchedSubprocess:
    """The ``subprocess`` module, whose ``Popen`` watches the process it starts; all else is the real one."""

    def __init__(self, label: str) -> None:
        self.label = label

    def Popen(self, *args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        child: subprocess.Popen[bytes] = subprocess.Popen(*args, **kwargs)

        def wait_for_it() -> None:
            code = child.wait()
            if code != 0:
                time.sleep(SHUTDOWN_GRACE_S)  # still here afterwards: this process is not shutting down
                _end_process(f"{self.label} (pid {child.pid}) exited with code {code}")

        threading.Thread(target=wait_for_it, name=f"watch {self.label}", daemon=True).start()
        return child

    def __getattr__(self, name: str) -> object:
        return getattr(subprocess, name)


def watch(superexec_starter: ModuleType, label: str) -> bool:
    """Make a dying thread, or a failing child of ``superexec_starter``, end this process.

    ``superexec_starter`` is the Flower module that starts the SuperExec with ``subprocess.Popen``;
    False if this Flower version no longer does so there (the threads are watched all the same).
    """
    threading.excepthook = _on_thread_exception
    if getattr(superexec_starter, "subprocess", None) is not subprocess:
        return False
    superexec_starter.subprocess = _WatchedSubprocess(label)  # type: ignore[attr-defined]
    return True
