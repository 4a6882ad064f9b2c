"""The watchdog of Flower's service processes: a part that dies ends the process, with its name.

Real threads and real child processes in a real Python process; Flower's own modules are checked
for the premises (where they start the SuperExec, where the SQLite lock wait is set).
"""

from __future__ import annotations

import importlib
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from deploy.coordinator.superlink_launcher import DEFAULT_BUSY_TIMEOUT_MS, lengthen_busy_timeout
from deploy.host.flower_watchdog import PART_DIED_EXIT_CODE

SERVICE = """
import subprocess, sys, threading, time, types
import deploy.host.flower_watchdog as watchdog

watchdog.SHUTDOWN_GRACE_S = 0.2
starter = types.ModuleType("starter")
starter.subprocess = subprocess
assert watchdog.watch(starter, "the test's SuperExec")
case = sys.argv[1]
if case == "thread":
    threading.Thread(target=lambda: 1 / 0, name="heartbeat", daemon=True).start()
else:
    starter.subprocess.Popen([sys.executable, "-c", f"raise SystemExit({case})"])
time.sleep(3)
print("still serving")
"""


def serve(case: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SERVICE, case], capture_output=True, text=True, timeout=30)


def test_a_dying_thread_ends_the_process_naming_it():
    result = serve("thread")
    assert result.returncode == PART_DIED_EXIT_CODE, result
    assert "heartbeat died: ZeroDivisionError" in result.stderr and "still serving" not in result.stdout


def test_a_failing_superexec_ends_the_process_naming_it():
    result = serve("1")
    assert result.returncode == PART_DIED_EXIT_CODE, result
    assert "the test's SuperExec (pid" in result.stderr and "exited with code 1" in result.stderr


def test_a_superexec_that_ends_cleanly_leaves_the_process_serving():
    result = serve("0")
    assert result.returncode == 0 and "still serving" in result.stdout, result


@pytest.mark.parametrize("module", ["flwr.superlink.cli.flower_superlink", "flwr.supernode.start_client_internal"])
def test_flower_starts_its_superexec_where_the_watchdog_looks(module):
    source = importlib.import_module(module)
    assert source.subprocess is subprocess and "subprocess.Popen(" in Path(source.__file__).read_text()


def test_the_superlink_launcher_lengthens_flowers_sqlite_lock_wait(monkeypatch):
    import flwr.supercore.sql_mixin as sql

    monkeypatch.setattr(sql, "SQLITE_PRAGMAS", sql.SQLITE_PRAGMAS)  # restored after the test
    assert dict(sql.SQLITE_PRAGMAS)["busy_timeout"] == "5000"  # Flower's own: the 500s seen under load
    assert lengthen_busy_timeout(sql, DEFAULT_BUSY_TIMEOUT_MS)
    with closing(sqlite3.connect(":memory:")) as database:
        sql._set_sqlite_pragmas(database, None)  # what Flower runs on each new connection
        assert database.execute("PRAGMA busy_timeout").fetchone()[0] == DEFAULT_BUSY_TIMEOUT_MS
    assert not lengthen_busy_timeout(type(sql)("moved"), DEFAULT_BUSY_TIMEOUT_MS)
