"""Flower's ``flower-supernode``, with a shorter wait between polls and a faster heartbeat.

Why. A SuperNode that finds no message waits a fixed 3 s before asking again (the idle branch
of ``flwr.supernode.start_client_internal``), and Flower has no option for it. Every exchange of
a round waits for that poll at every site, so a round lasts at least the slowest site's poll
delay per exchange. Secure aggregation needs four exchanges per round instead of one, so that
fixed wait was most of what SecAgg+ added to a round (bench/secure_aggregation_cost.py).

What. The launcher gives that one module a ``time`` whose ``sleep`` is capped at the idle poll
(default :data:`DEFAULT_IDLE_POLL_S`, or ``$INSITE_SUPERNODE_IDLE_POLL_S``), then runs Flower's own
entry point with the same arguments. Only waits in that module are shortened (the idle wait and
its 0.5 s waits for a ready reply); each poll is one small authenticated request, so a site at
0.5 s sends two a second while idle. If a Flower release moves that code, the launcher says so
and runs Flower unchanged.

Heartbeat. The SuperLink takes a node for gone two heartbeat intervals after its last one, and
only then answers the node's pending messages with an error and lets a restarted node (same key,
same node id) activate again. Flower's interval is 30 s; the launcher sets Flower's minimum, 10 s
(``$INSITE_SUPERNODE_HEARTBEAT_S``), so a crashed site is detected, and can rejoin, within ~20 s:
the detection delay of the fault model (docs/ARCHITECTURE.md).

Watchdog. A SuperNode whose heartbeat thread or SuperExec dies ends itself, so that its supervisor
restarts it, instead of staying up but offline (deploy/host/flower_watchdog.py).
"""

from __future__ import annotations

import logging
import os
import time
from types import ModuleType

from deploy.host.flower_watchdog import watch

DEFAULT_IDLE_POLL_S = 0.5
IDLE_POLL_ENV = "INSITE_SUPERNODE_IDLE_POLL_S"
# SuperExec (the SuperNode's ClientApp launcher) looks for new work this often; Flower's default
# is 1 s, and this, its own environment variable, sets it.
SUPEREXEC_POLL_ENV = "FLWR_SUPEREXEC_TASK_POLL_INTERVAL"
SUPEREXEC_POLL_S = "0.2"

HEARTBEAT_ENV = "INSITE_SUPERNODE_HEARTBEAT_S"
DEFAULT_HEARTBEAT_S = 10.0  # flwr.common.constant.HEARTBEAT_MIN_INTERVAL: the SuperLink refuses less

log = logging.getLogger(__name__)


class _CappedSleep:
    """The ``time`` module with ``sleep`` capped; every other attribute is the real one."""

    def __init__(self, cap: float) -> None:
        self.cap = cap

    def sleep(self, seconds: float) -> None:
        time.sleep(min(seconds, self.cap))

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)


def shorten_idle_poll(module: ModuleType, cap: float) -> bool:
    """Cap the sleeps of ``module`` (Flower's SuperNode loop); False if it has no ``time`` to cap."""
    if getattr(module, "time", None) is not time:
        return False
    module.time = _CappedSleep(cap)  # type: ignore[attr-defined]
    return True


def shorten_heartbeat(modules: list[ModuleType], interval: float) -> bool:
    """Set the heartbeat interval the SuperNode announces and keeps; False if Flower moved it."""
    if not all(hasattr(module, "HEARTBEAT_DEFAULT_INTERVAL") for module in modules):
        return False
    for module in modules:
        module.HEARTBEAT_DEFAULT_INTERVAL = interval  # type: ignore[attr-defined]
    return True


def poll_env() -> dict[str, str]:
    """Environment for a SuperNode: SuperExec's poll, unless the caller's environment sets it."""
    return {SUPEREXEC_POLL_ENV: os.environ.get(SUPEREXEC_POLL_ENV, SUPEREXEC_POLL_S)}


def main() -> None:
    """Console entry: ``flower-supernode`` with the same arguments."""
    import flwr.supercore.heartbeat as heartbeat  # noqa: PLC0415
    import flwr.supernode.fleet_http_connection as connection  # noqa: PLC0415
    import flwr.supernode.start_client_internal as supernode_loop  # noqa: PLC0415
    from flwr.supernode.cli import flower_supernode  # noqa: PLC0415

    cap = float(os.environ.get(IDLE_POLL_ENV, DEFAULT_IDLE_POLL_S))
    if not shorten_idle_poll(supernode_loop, cap):
        log.warning("this Flower version's SuperNode loop has changed; it keeps its own poll delay")
    interval = float(os.environ.get(HEARTBEAT_ENV, DEFAULT_HEARTBEAT_S))
    if not shorten_heartbeat([connection, heartbeat], interval):
        log.warning("this Flower version's heartbeat has moved; the SuperNode keeps Flower's interval")
    if not watch(supernode_loop, "the SuperNode's SuperExec (ClientApp launcher)"):
        log.warning("this Flower version starts its SuperExec elsewhere; only the SuperNode's threads are watched")
    flower_supernode()


if __name__ == "__main__":
    main()
