"""Premises the dashboard takes from Flower: how its SuperLink keeps nodes and runs in SQLite.

The dashboard reads the SuperLink's database read-only (deploy/coordinator/dashboard/superlink_db.py).
These tests build that database with Flower's own state class, as the SuperLink does, and fail
loudly when a Flower upgrade moves a column, renames a status or changes the heartbeat rule.
"""

from __future__ import annotations

import time

import pytest
from flwr.common.constant import HEARTBEAT_PATIENCE
from flwr.server.superlink.linkstate import LinkStateFactory
from flwr.supercore.constant import NodeStatus, TaskType
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.superlink.federation import NoOpFederationManager

from deploy.coordinator.dashboard.superlink_db import (
    NODE_COLUMNS,
    ONLINE,
    RUN_COLUMNS,
    SuperLinkStateError,
    read_nodes,
    read_runs,
)


@pytest.fixture()
def link_state(tmp_path):
    database = tmp_path / "state.db"
    state = LinkStateFactory(str(database), NoOpFederationManager(), ObjectStoreFactory(str(database))).state()
    return state, database


def test_flower_keeps_the_columns_and_statuses_the_dashboard_reads(link_state):
    from flwr.supercore.state.schema.linkstate_models import Node, Run

    assert set(NODE_COLUMNS) <= set(Node.__table__.columns.keys())
    assert set(RUN_COLUMNS) <= set(Run.__table__.columns.keys())
    assert NodeStatus.ONLINE == ONLINE and NodeStatus.UNREGISTERED == "unregistered"
    assert HEARTBEAT_PATIENCE == 2  # the README's "offline within two heartbeats"


def test_a_node_is_online_until_its_heartbeat_deadline(link_state):
    state, database = link_state
    interval = 10.0
    node_id = state.create_node("none", "none", b"site-a public key", interval, name="site-a")
    assert read_nodes(database)[0].online(time.time()) is False  # registered, never connected
    before = time.time()
    assert state.acknowledge_node_heartbeat(node_id, interval)
    (node,) = read_nodes(database)
    assert (node.node_id, node.name, node.status) == (node_id, "site-a", ONLINE)
    assert node.online(time.time())
    assert not node.online(time.time() + HEARTBEAT_PATIENCE * interval + 1)  # Flower's own rule, lazily applied
    heartbeat = node.last_heartbeat()
    assert heartbeat is not None and before - 1 <= heartbeat <= time.time() + 1


def test_a_run_records_its_app_digest_and_traffic(link_state):
    state, database = link_state
    run_id = state.create_run("insite/insite-app", "0.1.0", "ab" * 32, {}, "", None, "none", TaskType.SERVER_APP)
    state.store_traffic(run_id, bytes_sent=1000, bytes_recv=2000)
    run = read_runs(database, [run_id])[run_id]
    assert (run.fab_hash, run.fab_version, run.bytes_sent, run.bytes_received) == ("ab" * 32, "0.1.0", 1000, 2000)


def test_a_database_of_another_schema_is_named_not_misread(tmp_path):
    import sqlite3

    database = tmp_path / "state.db"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE node (node_id INTEGER, name TEXT)")
    with pytest.raises(SuperLinkStateError, match="lacks status, online_until"):
        read_nodes(database)
    assert read_nodes(tmp_path / "absent.db") == []
