"""Flower's ``flower-superlink``, with a longer wait for its database lock, held polls and a watchdog.

Why. The SuperLink keeps its state in SQLite (``--database``), and every request of every site
and of the ServerApp is a transaction on it. Flower gives a request 5 s to get the write lock
(``busy_timeout``) and answers HTTP 500 after that. On a loaded coordinator host (measured: a
chaos demo at load 6 on two cores) that happened, and the 500s killed parts of the federation
that never came back (deploy/host/flower_watchdog.py). A request that waits longer is merely
slow; one that fails can cost the round. The launcher gives the lock :data:`DEFAULT_BUSY_TIMEOUT_MS`
(or ``$INSITE_SUPERLINK_BUSY_TIMEOUT_MS``), then runs Flower's own entry point with the same
arguments. If a Flower release moves the setting, the launcher says so and runs Flower unchanged.

Held polls. A SuperNode asking for a message, the ServerApp asking for replies and either asking
for a message's object still uploading get "nothing yet" only after up to
:data:`deploy.host.held_polls.HOLD_S` without it: a message and its objects reach their receiver
as they are stored, not at its next poll, and idle askers send one request a second instead of
two (SuperNodes) or ten (the ServerApp). If a Flower release moves those handlers, the
launcher says so and they answer at once, as in Flower.

Task clean-up. Before answering a run's status, which Flower checks at every object a SuperNode
sends or fetches, the SuperLink writes its task table (two UPDATEs: tasks whose heartbeat expired
are released or failed). That was a quarter of the SuperLink's CPU in a SecAgg+ round (py-spy,
2026-11-29), and each is a write that every other request waits behind. The launcher runs it at
most once per :data:`TASK_CLEANUP_EVERY_S` (``$INSITE_SUPERLINK_TASK_CLEANUP_S``); heartbeats expire
after tens of seconds, so a task is released or failed at most that much later.

Watchdog. A SuperLink whose SuperExec (the ServerApp launcher) or a thread dies ends itself, so
that its supervisor restarts it with its database.
"""

from __future__ import annotations

import functools
import importlib
import logging
import math
import os
import threading
import time
from types import ModuleType

from deploy.host import held_polls
from deploy.host.flower_watchdog import watch
from deploy.host.held_polls import (
    Arrivals,
    announce_from,
    has_all,
    hold_in,
    no_messages,
    object_of,
    still_uploading,
)

DEFAULT_BUSY_TIMEOUT_MS = 60_000
BUSY_TIMEOUT_ENV = "INSITE_SUPERLINK_BUSY_TIMEOUT_MS"
TASK_CLEANUP_EVERY_S = 1.0
TASK_CLEANUP_ENV = "INSITE_SUPERLINK_TASK_CLEANUP_S"

log = logging.getLogger(__name__)


def lengthen_busy_timeout(sql_module: ModuleType, milliseconds: int) -> bool:
    """Set SQLite's ``busy_timeout`` in the pragmas ``sql_module`` applies; False if it has none."""
    pragmas = getattr(sql_module, "SQLITE_PRAGMAS", None)
    if not isinstance(pragmas, tuple) or "busy_timeout" not in dict(pragmas):
        return False
    sql_module.SQLITE_PRAGMAS = tuple(  # type: ignore[attr-defined]
        (name, str(milliseconds) if name == "busy_timeout" else value) for name, value in pragmas
    )
    return True


def thin_task_cleanup(state: type, every_s: float) -> bool:
    """Run ``state._cleanup_expired_task_tokens`` at most once per ``every_s``; False if Flower moved it."""
    cleanup = getattr(state, "_cleanup_expired_task_tokens", None)
    if not callable(cleanup):
        return False
    lock = threading.Lock()
    last = [-math.inf]

    @functools.wraps(cleanup)
    def now_and_then(self: object) -> None:
        with lock:
            due = time.monotonic() - last[0] >= every_s
            if due:
                last[0] = time.monotonic()
        if due:
            cleanup(self)

    state._cleanup_expired_task_tokens = now_and_then  # type: ignore[attr-defined]
    return True


def hold_polls(fleet: ModuleType, runtime: ModuleType, states: list[type]) -> bool:
    """Hold the SuperNodes' (``fleet``) and the ServerApp's (``runtime``) empty pulls; False if Flower moved them.

    ``states``: the link-state classes whose store methods end the holds: a message for a site,
    a site's reply, an object's bytes.
    """
    stores = ("store_message_ins", "store_message_res", "store_object")
    pulls = ("pull_messages", "pull_object")
    if not has_all({fleet: pulls, runtime: pulls, **{state: stores for state in states}}):
        return False
    for_sites, for_coordinator, objects = Arrivals(), Arrivals(), Arrivals()
    for state in states:
        announce_from(state, "store_message_ins", for_sites)
        announce_from(state, "store_message_res", for_coordinator)
        announce_from(state, "store_object", objects, key="object_id")
    # Every site may be waiting for a message, each SuperNode pulls two objects at a time, one
    # ServerApp runs at a time: 24 of the Fleet API's 40 request threads at most, 6 of the runtime API's.
    hold_in(fleet, "pull_messages", no_messages, for_sites, slots=16)
    hold_in(fleet, "pull_object", still_uploading, objects, slots=8, key=object_of)
    hold_in(runtime, "pull_messages", no_messages, for_coordinator, slots=2)
    hold_in(runtime, "pull_object", still_uploading, objects, slots=4, key=object_of)
    return True


def main() -> None:
    """Console entry: ``flower-superlink`` with the same arguments."""
    # By name: the package flwr.superlink.cli exports a function of the same name as this module.
    superlink = importlib.import_module("flwr.superlink.cli.flower_superlink")
    sql = importlib.import_module("flwr.supercore.sql_mixin")

    if not lengthen_busy_timeout(sql, int(os.environ.get(BUSY_TIMEOUT_ENV, DEFAULT_BUSY_TIMEOUT_MS))):
        log.warning("this Flower version's SQLite settings have moved; the SuperLink keeps Flower's lock wait")
    core = importlib.import_module("flwr.supercore.corestate.sql_corestate").SqlCoreState
    if not thin_task_cleanup(core, float(os.environ.get(TASK_CLEANUP_ENV, TASK_CLEANUP_EVERY_S))):
        log.warning("this Flower version cleans up its tasks elsewhere; it does so at every request, as in Flower")
    try:
        held_pulls = not held_polls.wanted() or hold_polls(
            importlib.import_module("flwr.superlink.servicer.fleet.fleet_handlers"),
            importlib.import_module("flwr.superlink.servicer.runtime.runtime_handlers"),
            [
                importlib.import_module("flwr.server.superlink.linkstate.sql_linkstate").SqlLinkState,
                importlib.import_module("flwr.server.superlink.linkstate.in_memory_linkstate").InMemoryLinkState,
            ],
        )
    except (ImportError, AttributeError):
        held_pulls = False
    if not held_pulls:
        log.warning("this Flower version's message pulls have moved; they answer at once, as in Flower")
    if not watch(superlink, "the SuperLink's SuperExec (ServerApp launcher)"):
        log.warning("this Flower version starts its SuperExec elsewhere; only the SuperLink's threads are watched")
    superlink.flower_superlink()


if __name__ == "__main__":
    main()
