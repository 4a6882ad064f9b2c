"""The demo's sites in processes of their own: every site's outcome comes back, and no wait is unbounded."""

from __future__ import annotations

import multiprocessing
import time
from functools import partial

from common.errors import SiteDataError
from deploy.demo.site_processes import run_per_site
from harness.site_jobs import counts_to, hangs_after_one_event, is_killed, raises


def test_a_hung_a_killed_and_a_failing_site_are_named_and_the_others_finish():
    events: list[object] = []
    started = time.monotonic()
    outcomes = run_per_site(
        {
            "site-a": partial(counts_to, 3),
            "site-b": hangs_after_one_event,
            "site-c": is_killed,
            "site-d": raises,
        },
        events.append,
        "data preparation",
        stall_s=20,  # a spawned site imports torch first: seconds on a loaded machine
    )
    assert outcomes["site-a"] == 3 and events.count(1) == 1 and events.count(3) == 1 and "started" in events
    assert isinstance(outcomes["site-b"], SiteDataError)
    assert str(outcomes["site-b"]) == "site site-b: data preparation showed no progress for 20 s; stopped"
    assert str(outcomes["site-c"]).startswith("site site-c: data preparation ended without a result (exit code -9")
    assert str(outcomes["site-d"]) == "site site-d: data preparation failed: ValueError: no lesion mask for case 7"
    assert time.monotonic() - started < 90  # bounded by the stall limit, not by the hung site's hour
    assert multiprocessing.active_children() == []  # the hung site was stopped, not left behind
