"""The local supervisor's restart rule, on real child processes.

A process that dies at once, again and again, is restarted with a doubling delay and finally
given up, naming it; one that had stayed up before it died is a new fault and is restarted after
the first delay, however many times that happens (a site that crashes once a day).
"""

from __future__ import annotations

import os
import time

import pytest

from common.errors import LaunchError
from deploy.host.processes import ProcessSet, RestartPolicy


def supervise_for(processes: ProcessSet, seconds: float) -> list[str]:
    events: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        events.extend(processes.supervise())
        time.sleep(0.02)
    return events


def test_a_process_that_cannot_stay_up_backs_off_and_is_given_up(tmp_path):
    policy = RestartPolicy(first_delay_s=0.1, max_delay_s=10, max_restarts=3, window_s=60, stable_s=5)
    with ProcessSet(tmp_path, dict(os.environ)) as processes:
        crashing = processes.start("crashing", ["false"], restart=policy)
        delays: list[tuple[float, float]] = []
        with pytest.raises(LaunchError, match="crashing exited with code 1 and was restarted 3 times"):
            deadline = time.monotonic() + 30  # three short restarts take well under a second
            while time.monotonic() < deadline:
                processes.supervise()
                if crashing.due is not None and (not delays or delays[-1][0] != crashing.due):
                    delays.append((crashing.due, crashing.due - time.monotonic()))
                time.sleep(0.01)
    waits = [wait for _, wait in delays]
    assert len(waits) == 3 and waits[1] > 1.5 * waits[0] and waits[2] > 1.5 * waits[1]


def test_a_process_that_had_stayed_up_is_restarted_after_the_first_delay_every_time(tmp_path):
    policy = RestartPolicy(first_delay_s=0.1, max_delay_s=10, max_restarts=2, window_s=60, stable_s=0.2)
    with ProcessSet(tmp_path, dict(os.environ)) as processes:
        processes.start("daily-crash", ["sleep", "0.3"], restart=policy)
        events = supervise_for(processes, 3.0)
    restarts = [event for event in events if "restarted (pid" in event]
    assert len(restarts) >= 4  # never given up, though more than max_restarts in the window
    assert all("restarting it in 0 s" in event for event in events if "exited" in event)
