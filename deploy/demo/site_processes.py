"""The demo's sites work side by side, one process each, as three hospitals would.

Processes are spawned (not forked) because the caller has torch loaded, whose thread pools do not
survive a fork. Each site gets one torch thread: the sites share this machine's cores the way the
SuperNodes do, and torch's own thread pool would oversubscribe them. Progress comes back through a
queue per site, so the caller can show every site's progress while it waits, and the wait is
bounded by it: a site that shows none for ``stall_s`` seconds is stopped and reported as stalled.

One plain process per site rather than a process pool, because a stalled site must be stopped
alone: a pool can neither cancel a running job nor end one of its workers.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
from collections.abc import Callable, Mapping
from typing import Any

from common.errors import SiteDataError

# A site's job: its arguments are bound already, the progress queue comes last.
SiteJob = Callable[[queue.Queue], Any]
STALL_S = 900.0  # longer than any step of the demo's site work shows no progress (a training round)


def run_per_site(
    jobs: Mapping[str, SiteJob], on_event: Callable[[Any], None], work: str, stall_s: float = STALL_S
) -> dict[str, Any]:
    """Run every site's job in its own process; each site's result, or the SiteDataError that says why not.

    One site's failure never stops the others: the caller decides what a missing site means.
    ``work`` names the job in a failure ("data preparation", "local-only training").
    """
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        events = {site: manager.Queue() for site in jobs}
        outcomes = manager.Queue()
        processes = {
            site: context.Process(target=_run_site, args=(site, job, events[site], outcomes, work), name=site)
            for site, job in jobs.items()
        }
        for process in processes.values():
            process.start()
        try:
            results = _wait(processes, events, outcomes, on_event, work, stall_s)
        finally:
            for process in processes.values():
                process.kill()  # a no-op for a process that has ended; nothing outlives the call
                process.join()
        return {site: results[site] for site in jobs}


def _wait(
    processes: Mapping[str, Any],
    events: Mapping[str, queue.Queue],
    outcomes: queue.Queue,
    on_event: Callable[[Any], None],
    work: str,
    stall_s: float,
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    heard = dict.fromkeys(processes, time.monotonic())
    while len(results) < len(processes):
        for site, process in processes.items():
            if site in results:
                continue
            if _drain(events[site], on_event):
                heard[site] = time.monotonic()
            _collect(outcomes, results)  # before the liveness check: a site puts its outcome, then ends
            if site in results:
                continue
            if not process.is_alive():
                results[site] = SiteDataError(
                    f"site {site}: {work} ended without a result (exit code {process.exitcode}: killed, "
                    "or out of memory?)"
                )
            elif time.monotonic() - heard[site] > stall_s:
                process.kill()
                results[site] = SiteDataError(f"site {site}: {work} showed no progress for {stall_s:.0f} s; stopped")
        time.sleep(0.2)
    for site_events in events.values():
        _drain(site_events, on_event)
    return results


def _run_site(site: str, job: SiteJob, events: queue.Queue, outcomes: queue.Queue, work: str) -> None:
    import torch  # noqa: PLC0415  (only the site processes need it, to limit their threads)

    torch.set_num_threads(1)
    try:
        outcomes.put((site, job(events)))
    except SiteDataError as error:
        outcomes.put((site, error))
    except Exception as error:  # the traceback stays in this process's stderr; the caller gets the site and reason
        outcomes.put((site, SiteDataError(f"site {site}: {work} failed: {type(error).__name__}: {error}")))
        raise


def _collect(outcomes: queue.Queue, results: dict[str, Any]) -> None:
    while True:
        try:
            site, outcome = outcomes.get_nowait()
        except queue.Empty:
            return
        results[site] = outcome


def _drain(events: queue.Queue, on_event: Callable[[Any], None]) -> bool:
    """Pass on the site's waiting events; whether there were any."""
    heard = False
    while True:
        try:
            on_event(events.get_nowait())
        except queue.Empty:
            return heard
        heard = True
