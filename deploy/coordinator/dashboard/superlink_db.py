"""What the coordinator's SuperLink knows about sites and runs, read from its SQLite database.

The SuperLink keeps its nodes (one per registered site key: name, status, heartbeat deadline) and
its runs (app digest and version, bytes on the wire) in ``superlink/state.db``. Flower has no API
that lists nodes with their last heartbeat outside a run, so the dashboard opens that database
read-only (``mode=ro``: it can never change the SuperLink's state) and checks first that the
columns it reads are there. Flower 1.42's schema is in ``flwr/supercore/state/schema/
linkstate_models.py``; ``tests/ops/test_dashboard_premises.py`` fails if a Flower upgrade moves it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from flwr.common.constant import HEARTBEAT_PATIENCE

from common.errors import InsiteError

NODE_COLUMNS = ("node_id", "name", "status", "online_until", "heartbeat_interval", "public_key")
RUN_COLUMNS = ("run_id", "fab_hash", "fab_version", "bytes_sent", "bytes_recv")
ONLINE = "online"
#: How long to wait for the SuperLink's write lock before giving up on one read.
BUSY_TIMEOUT_S = 5.0


class SuperLinkStateError(InsiteError):
    """The SuperLink's database cannot be read, or its schema is not the one this code reads."""


@dataclass(frozen=True)
class FlowerNode:
    """One SuperNode as the SuperLink sees it (a site's registered key)."""

    node_id: int
    name: str
    status: str
    online_until: float | None
    heartbeat_interval: float | None
    public_key_pem: bytes

    def online(self, now: float) -> bool:
        """Flower marks a node offline lazily, when asked; the deadline is what decides."""
        return self.status == ONLINE and self.online_until is not None and self.online_until > now

    def last_heartbeat(self) -> float | None:
        """When the node last reported: Flower keeps it online ``HEARTBEAT_PATIENCE`` intervals after that."""
        if self.online_until is None or self.heartbeat_interval is None:
            return None
        return self.online_until - HEARTBEAT_PATIENCE * self.heartbeat_interval


@dataclass(frozen=True)
class FlowerRun:
    """One Flower run: the app it shipped (FAB digest and version) and the traffic it caused."""

    run_id: int
    fab_hash: str
    fab_version: str
    bytes_sent: int
    bytes_received: int


def _open(database: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
    connection.row_factory = sqlite3.Row
    return connection


def _require_columns(connection: sqlite3.Connection, table: str, wanted: Iterable[str], database: Path) -> None:
    present = {row["name"] for row in connection.execute(f"PRAGMA table_info({table})")}
    missing = [column for column in wanted if column not in present]
    if missing:
        raise SuperLinkStateError(
            f"{database}: table '{table}' lacks {', '.join(missing)}; this Flower version keeps its state "
            "differently than the dashboard reads it (see deploy/coordinator/dashboard/superlink_db.py)"
        )


def _unsigned(value: int) -> int:
    """Flower stores its uint64 ids as SQLite's signed int64 (``uint64_to_int64``)."""
    return value + (1 << 64) if value < 0 else value


def read_nodes(database: Path) -> list[FlowerNode]:
    """Every node the SuperLink has not unregistered; [] before the SuperLink created its database."""
    if not database.is_file():
        return []
    try:
        with closing(_open(database)) as connection:
            _require_columns(connection, "node", NODE_COLUMNS, database)
            rows = connection.execute(
                f"SELECT {', '.join(NODE_COLUMNS)} FROM node WHERE status != 'unregistered'"
            ).fetchall()
    except sqlite3.Error as error:
        raise SuperLinkStateError(f"{database}: cannot read the SuperLink's nodes ({error})") from None
    return [
        FlowerNode(
            _unsigned(int(row["node_id"])),
            row["name"] or "",
            row["status"] or "",
            row["online_until"],
            row["heartbeat_interval"],
            bytes(row["public_key"] or b""),
        )
        for row in rows
    ]


def read_runs(database: Path, run_ids: Iterable[int]) -> dict[int, FlowerRun]:
    """The Flower runs with these ids that the SuperLink still holds."""
    wanted = list(run_ids)
    if not wanted or not database.is_file():
        return {}
    signed = [value - (1 << 64) if value >= 1 << 63 else value for value in wanted]
    try:
        with closing(_open(database)) as connection:
            _require_columns(connection, "run", RUN_COLUMNS, database)
            rows = connection.execute(
                f"SELECT {', '.join(RUN_COLUMNS)} FROM run WHERE run_id IN ({', '.join('?' * len(signed))})",
                signed,
            ).fetchall()
    except sqlite3.Error as error:
        raise SuperLinkStateError(f"{database}: cannot read the SuperLink's runs ({error})") from None
    runs = (
        FlowerRun(
            _unsigned(int(row["run_id"])),
            row["fab_hash"] or "",
            row["fab_version"] or "",
            int(row["bytes_sent"] or 0),
            int(row["bytes_recv"] or 0),
        )
        for row in rows
    )
    return {run.run_id: run for run in runs}
