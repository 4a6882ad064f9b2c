"""Flower's ``flower-supernode``, with a shorter wait between polls, held task polls and a faster heartbeat.

Why. A SuperNode that finds no message waits a fixed 3 s before asking again (the idle branch
of ``flwr.supernode.start_client_internal``), and Flower has no option for it. Every exchange of
a round waits for that poll at every site, so a round lasts at least the slowest site's poll
delay per exchange. Secure aggregation needs more exchanges per round than one, so that fixed
wait was most of what SecAgg+ added to a round (bench/secure_aggregation_cost.py).

What. The launcher gives that one module a ``time`` whose ``sleep`` is capped, then runs
Flower's own entry point with the same arguments. Only waits in that module are shortened, two
kinds of them: the idle wait before the next pull (Flower's 3 s, capped at
:data:`DEFAULT_IDLE_POLL_S` or ``$INSITE_SUPERNODE_IDLE_POLL_S``; each is one small authenticated
request to the SuperLink, so a site at 0.5 s sends two a second while idle), and the waits for
the ClientApp's reply to appear in the SuperNode's own in-memory state before it is pushed
(Flower's 0.5 s, capped at :data:`DEFAULT_LOCAL_WAIT_S` or ``$INSITE_SUPERNODE_LOCAL_WAIT_S``: a
look at a dictionary, no request; at Flower's 0.5 s a reply waited 0.25 s on average, up to 0.5 s,
in every exchange, bench/round_floor.py ``--polls``). If a Flower release moves that code, the
launcher says so and runs Flower unchanged.

Held task polls. SuperExec asks the SuperNode for a task to start 0.05 s after its last ask was
answered (``$FLWR_SUPEREXEC_TASK_POLL_INTERVAL``; Flower's 1 s); here an empty answer is held until the
SuperNode creates a task, up to :data:`deploy.host.held_polls.HOLD_S`, so a message's ClientApp
starts as soon as its SuperNode has the message's header, and an idle SuperExec asks once a
second. The task's pull of an object its SuperNode is still downloading is held the same way,
until the object is there.

Heartbeat. The SuperLink takes a node for gone two heartbeat intervals after its last one, and
only then answers the node's pending messages with an error and lets a restarted node (same key,
same node id) activate again. Flower's interval is 30 s; the launcher sets Flower's minimum, 10 s
(``$INSITE_SUPERNODE_HEARTBEAT_S``), so a crashed site is detected, and can rejoin, within ~20 s:
the detection delay of the fault model (docs/ARCHITECTURE.md).

Watchdog. A SuperNode whose heartbeat thread or SuperExec dies ends itself, so that its supervisor
restarts it, instead of staying up but offline (deploy/host/flower_watchdog.py).

Warm ClientApp worker. The launcher starts the site's warm worker (deploy/site/warm_clientapp.py)
before Flower, names it to the SuperExec and its ClientApps through ``$INSITE_WARM_CLIENTAPP_SOCKET``,
and starts it again if it ends. ``INSITE_WARM_CLIENTAPP=0`` turns it off: every message then runs
in a new interpreter, as in Flower.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
import threading
import time
from types import ModuleType

from common.object_pulls import quicker_object_retries
from deploy.host import held_polls
from deploy.host.flower_watchdog import watch
from deploy.host.held_polls import Arrivals, announce_from, has_all, hold_in, object_of, still_uploading
from deploy.site.warm_clientapp import SOCKET_ENV

DEFAULT_IDLE_POLL_S = 0.5
IDLE_POLL_ENV = "INSITE_SUPERNODE_IDLE_POLL_S"
DEFAULT_LOCAL_WAIT_S = 0.05
LOCAL_WAIT_ENV = "INSITE_SUPERNODE_LOCAL_WAIT_S"
# Flower's SuperNode loop sleeps this long when the SuperLink had nothing for it; its shorter
# sleeps (0.5 s) wait on the SuperNode's own state.
FLOWER_IDLE_SLEEP_S = 3.0
# SuperExec (the SuperNode's ClientApp launcher) looks for new work this often; Flower's default
# is 1 s, and this, its own environment variable, sets it. The SuperNode holds each of its asks
# until a task comes (up to 1 s), so the pause between asks is only a gap a message can fall in;
# with held polls off, every ask is answered at once and 0.2 s keeps them to five a second.
SUPEREXEC_POLL_ENV = "FLWR_SUPEREXEC_TASK_POLL_INTERVAL"
SUPEREXEC_POLL_S = "0.05"
SUPEREXEC_UNHELD_POLL_S = "0.2"

HEARTBEAT_ENV = "INSITE_SUPERNODE_HEARTBEAT_S"
DEFAULT_HEARTBEAT_S = 10.0  # flwr.common.constant.HEARTBEAT_MIN_INTERVAL: the SuperLink refuses less

WARM_ENV = "INSITE_WARM_CLIENTAPP"  # "0": no warm worker; each message in a new interpreter
# A worker that ends this soon after its start, this many times in a row, is not started again
# (its messages run cold, and the SuperNode's log says why).
WARM_QUICK_EXIT_S = 30.0
WARM_QUICK_EXITS = 3

log = logging.getLogger(__name__)


class _CappedSleep:
    """The ``time`` module with ``sleep`` capped; every other attribute is the real one.

    Flower's idle wait (its 3 s) lasts what is left of ``idle_cap`` since the last idle wait ended
    (the pull in between may have been held that long), its local waits at most ``local_cap``.
    """

    def __init__(self, idle_cap: float, local_cap: float) -> None:
        self.idle_cap = idle_cap
        self.local_cap = local_cap
        self._idle_ended = 0.0

    def sleep(self, seconds: float) -> None:
        if seconds < FLOWER_IDLE_SLEEP_S:
            time.sleep(min(seconds, self.local_cap))
            return
        time.sleep(max(0.0, self.idle_cap - (time.monotonic() - self._idle_ended)))
        self._idle_ended = time.monotonic()

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)


def shorten_polls(module: ModuleType, idle_cap: float, local_cap: float) -> bool:
    """Cap the sleeps of ``module`` (Flower's SuperNode loop); False if it has no ``time`` to cap."""
    if getattr(module, "time", None) is not time:
        return False
    module.time = _CappedSleep(idle_cap, local_cap)  # type: ignore[attr-defined]
    return True


def shorten_heartbeat(modules: list[ModuleType], interval: float) -> bool:
    """Set the heartbeat interval the SuperNode announces and keeps; False if Flower moved it."""
    if not all(hasattr(module, "HEARTBEAT_DEFAULT_INTERVAL") for module in modules):
        return False
    for module in modules:
        module.HEARTBEAT_DEFAULT_INTERVAL = interval  # type: ignore[attr-defined]
    return True


def hold_task_polls(handlers: ModuleType, state: type, store: type) -> bool:
    """Hold SuperExec's empty ``acquire_task`` and a task's pull of an object on its way; False if Flower moved them.

    ``handlers``: the SuperNode's runtime API; ``state`` creates tasks, ``store`` keeps objects.
    """
    if not has_all({handlers: ("acquire_task", "pull_object"), state: ("create_task",), store: ("put",)}):
        return False
    created, stored = Arrivals(), Arrivals()
    announce_from(state, "create_task", created)
    announce_from(store, "put", stored, key="object_id")
    hold_in(handlers, "acquire_task", lambda response: not response.HasField("task"), created, slots=2)
    hold_in(handlers, "pull_object", still_uploading, stored, slots=4, key=object_of)
    return True


def poll_env() -> dict[str, str]:
    """Environment for a SuperNode: SuperExec's poll, unless the caller's environment sets it."""
    default = SUPEREXEC_POLL_S if held_polls.wanted() else SUPEREXEC_UNHELD_POLL_S
    return {SUPEREXEC_POLL_ENV: os.environ.get(SUPEREXEC_POLL_ENV, default)}


def keep_warm_worker(name: str) -> threading.Thread:
    """Start the warm ClientApp worker on socket ``name``, and again whenever it ends, while this process runs.

    The thread that starts the worker must outlive it: the worker ends with that thread
    (``PR_SET_PDEATHSIG``), so it is this thread, which does nothing else, that waits on it.
    """

    def supervise() -> None:
        quick_exits = 0
        while quick_exits < WARM_QUICK_EXITS:
            started = time.monotonic()
            code = subprocess.call([sys.executable, "-m", "deploy.site.warm_clientapp", name, str(os.getpid())])
            quick_exits = quick_exits + 1 if time.monotonic() - started < WARM_QUICK_EXIT_S else 0
            log.warning("the warm ClientApp worker ended (exit code %s); starting a new one", code)
            time.sleep(1.0)
        log.error(
            "the warm ClientApp worker ended %d times within %.0f s of its start; "
            "messages now run cold, each in a new flwr-clientapp process",
            WARM_QUICK_EXITS,
            WARM_QUICK_EXIT_S,
        )

    thread = threading.Thread(target=supervise, name="warm ClientApp worker", daemon=True)
    thread.start()
    return thread


def main() -> None:
    """Console entry: ``flower-supernode`` with the same arguments."""
    import flwr.supercore.heartbeat as heartbeat  # noqa: PLC0415
    import flwr.supernode.fleet_http_connection as connection  # noqa: PLC0415
    import flwr.supernode.servicer.runtime.runtime_handlers as task_handlers  # noqa: PLC0415
    import flwr.supernode.start_client_internal as supernode_loop  # noqa: PLC0415
    from flwr.supercore.object_store.in_memory_object_store import InMemoryObjectStore  # noqa: PLC0415
    from flwr.supernode.cli import flower_supernode  # noqa: PLC0415
    from flwr.supernode.nodestate.in_memory_nodestate import InMemoryNodeState  # noqa: PLC0415

    idle_cap = float(os.environ.get(IDLE_POLL_ENV, DEFAULT_IDLE_POLL_S))
    local_cap = float(os.environ.get(LOCAL_WAIT_ENV, DEFAULT_LOCAL_WAIT_S))
    if not shorten_polls(supernode_loop, idle_cap, local_cap):
        log.warning("this Flower version's SuperNode loop has changed; it keeps its own poll delay")
    if not quicker_object_retries(supernode_loop):
        log.warning("this Flower version's SuperNode pulls objects elsewhere; it keeps Flower's 1 s retry wait")
    if held_polls.wanted() and not hold_task_polls(task_handlers, InMemoryNodeState, InMemoryObjectStore):
        log.warning("this Flower version's task polls have moved; SuperExec's are answered at once, as in Flower")
    interval = float(os.environ.get(HEARTBEAT_ENV, DEFAULT_HEARTBEAT_S))
    if not shorten_heartbeat([connection, heartbeat], interval):
        log.warning("this Flower version's heartbeat has moved; the SuperNode keeps Flower's interval")
    if not watch(supernode_loop, "the SuperNode's SuperExec (ClientApp launcher)"):
        log.warning("this Flower version starts its SuperExec elsewhere; only the SuperNode's threads are watched")
    if os.environ.get(WARM_ENV, "1") != "0":
        os.environ[SOCKET_ENV] = f"insite-warm-clientapp-{os.getpid()}-{secrets.token_hex(4)}"
        keep_warm_worker(os.environ[SOCKET_ENV])
    flower_supernode()


if __name__ == "__main__":
    main()
