"""Site jobs for deploy.demo.site_processes' tests: module-level, so spawned processes can import them."""

from __future__ import annotations

import os
import queue
import signal
import time


def counts_to(n: int, events: queue.Queue) -> int:
    for done in range(1, n + 1):
        events.put(done)
    return n


def hangs_after_one_event(events: queue.Queue) -> None:
    events.put("started")
    time.sleep(3600)


def is_killed(events: queue.Queue) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def raises(events: queue.Queue) -> None:
    raise ValueError("no lesion mask for case 7")
