"""Flower's ``flower-superlink``, with a longer wait for its database lock and a watchdog.

Why. The SuperLink keeps its state in SQLite (``--database``), and every request of every site
and of the ServerApp is a transaction on it. Flower gives a request 5 s to get the write lock
(``busy_timeout``) and answers HTTP 500 after that. On a loaded coordinator host (measured: a
chaos demo at load 6 on two cores) that happened, and the 500s killed parts of the federation
that never came back (deploy/host/flower_watchdog.py). A request that waits longer is merely
slow; one that fails can cost the round. The launcher gives the lock :data:`DEFAULT_BUSY_TIMEOUT_MS`
(or ``$INSITE_SUPERLINK_BUSY_TIMEOUT_MS``), then runs Flower's own entry point with the same
arguments. If a Flower release moves the setting, the launcher says so and runs Flower unchanged.

Watchdog. A SuperLink whose SuperExec (the ServerApp launcher) or a thread dies ends itself, so
that its supervisor restarts it with its database.
"""

from __future__ import annotations

import importlib
import logging
import os
from types import ModuleType

from deploy.host.flower_watchdog import watch

DEFAULT_BUSY_TIMEOUT_MS = 60_000
BUSY_TIMEOUT_ENV = "INSITE_SUPERLINK_BUSY_TIMEOUT_MS"

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


def main() -> None:
    """Console entry: ``flower-superlink`` with the same arguments."""
    # By name: the package flwr.superlink.cli exports a function of the same name as this module.
    superlink = importlib.import_module("flwr.superlink.cli.flower_superlink")
    sql = importlib.import_module("flwr.supercore.sql_mixin")

    if not lengthen_busy_timeout(sql, int(os.environ.get(BUSY_TIMEOUT_ENV, DEFAULT_BUSY_TIMEOUT_MS))):
        log.warning("this Flower version's SQLite settings have moved; the SuperLink keeps Flower's lock wait")
    if not watch(superlink, "the SuperLink's SuperExec (ServerApp launcher)"):
        log.warning("this Flower version starts its SuperExec elsewhere; only the SuperLink's threads are watched")
    superlink.flower_superlink()


if __name__ == "__main__":
    main()
