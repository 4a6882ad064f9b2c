"""One ServerApp per run folder: a resumed run never races a coordinator process that still lives.

After a crash the run supervisor submits a new Flower run on the same run folder. Should the old
ServerApp still be alive (hung, or its SuperLink restarted under it), two processes would write
the same checkpoints and rounds. The lock (``fcntl``, released by the kernel when its holder dies,
however it dies) makes the second one refuse, naming the first one's pid. Before it submits, the
supervisor ends any ServerApp still holding the folder (:func:`held_by`): it belongs to a Flower
run already given up.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from common.errors import FederationError

LOCK_FILE = "coordinator.lock"


def lock_holder(run_dir: Path) -> int | None:
    """The pid written by the ServerApp that holds (or last held) ``run_dir``'s lock."""
    try:
        return int((run_dir / LOCK_FILE).read_text().strip() or 0) or None
    except (OSError, ValueError):
        return None


def held_by(run_dir: Path) -> int | None:
    """The pid of the live process holding ``run_dir``'s lock; None if no one holds it."""
    try:
        descriptor = os.open(run_dir / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return lock_holder(run_dir)
    finally:
        os.close(descriptor)  # closing releases a lock this test took
    return None


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    run_dir.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FederationError(
                f"{run_dir}: another ServerApp (pid {lock_holder(run_dir)}) is running this run"
            ) from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(descriptor)
