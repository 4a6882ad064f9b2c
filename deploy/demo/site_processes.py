"""The demo's sites work side by side, one process each, as three hospitals would.

Processes are spawned (not forked) because the caller has torch loaded, whose thread pools do not
survive a fork. Each site gets one torch thread: the sites share this machine's cores the way the
SuperNodes do, and torch's own thread pool would oversubscribe them. Progress comes back through a
queue, so the caller can show every site's progress while it waits.
"""

from __future__ import annotations

import multiprocessing
import queue
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ProcessPoolExecutor, wait
from typing import Any

from common.errors import SiteDataError

# A site's job: its arguments are bound already, the progress queue comes last.
SiteJob = Callable[[queue.Queue], Any]


def run_per_site(jobs: Mapping[str, SiteJob], on_event: Callable[[Any], None], work: str) -> dict[str, Any]:
    """Run every site's job in its own process; each site's result, or the SiteDataError that says why not.

    One site's failure never stops the others: the caller decides what a missing site means.
    ``work`` names the job in a failure ("data preparation", "local-only training").
    """
    context = multiprocessing.get_context("spawn")
    with (
        context.Manager() as manager,
        ProcessPoolExecutor(len(jobs), mp_context=context, initializer=_one_thread) as pool,
    ):
        events = manager.Queue()
        futures: dict[Future, str] = {pool.submit(job, events): site for site, job in jobs.items()}
        pending = set(futures)
        while pending:
            _, pending = wait(pending, timeout=0.2)
            _drain(events, on_event)
        _drain(events, on_event)
        return {site: _result(future, site, work) for future, site in futures.items()}


def _one_thread() -> None:
    import torch  # noqa: PLC0415  (only the worker processes need it, to limit their threads)

    torch.set_num_threads(1)


def _result(future: Future, site: str, work: str) -> Any:
    try:
        return future.result()
    except SiteDataError as error:
        return error
    except Exception as error:  # the site's own traceback is in its process; name the site here
        return SiteDataError(f"site {site}: {work} failed: {type(error).__name__}: {error}")


def _drain(events: queue.Queue, on_event: Callable[[Any], None]) -> None:
    while True:
        try:
            on_event(events.get_nowait())
        except queue.Empty:
            return
