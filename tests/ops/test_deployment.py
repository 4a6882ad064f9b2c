"""A deployment as operators run it: 'coord launch', two 'site join' processes, 'coord run', 'resume'.

Everything is on loopback but goes through the real commands: the coordinator's Fleet-only proxy,
TLS from the consortium CA, node keys made by 'site keygen' and registered by 'coord register-site'
(one before launch, one while the SuperLink runs), kits from 'coord kit', apps approved per site.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.run_record import RunRecord, latest_checkpoint
from deploy.coordinator.app_bundle import stage_app
from deploy.coordinator.consortium import CoordinatorDir, running_superlink
from deploy.host.processes import kill_strays
from insite.cli import coord

# ~3 min idle, 9 min on the shared 2-core machine under load: six process start-ups, two runs.
pytestmark = [pytest.mark.slow, pytest.mark.federation, pytest.mark.timeout(1200)]

INSITE = str(Path(sys.executable).parent / "insite")
TINY_RUN = """[run]
rounds = 2
min_sites = 2
round_timeout_s = 300
[run.aggregation]
mode = "plain"
[run.training]
local_steps = 2
batch_size = 1
patch_size = 16
[run.model]
channels = [4, 8, 16]
strides = [2, 2]
"""


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Foreground:
    """An 'insite' service started as an operator would, in its own session; always reaped."""

    def __init__(self, log: Path, *args: str | Path) -> None:
        self.log = log
        with open(log, "wb") as out:
            self.popen = subprocess.Popen(
                [INSITE, *map(str, args)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, "COLUMNS": "200"},
                # As in a terminal: a test run started in the background inherits SIGINT ignored
                # (POSIX shells do that to background jobs), and Python keeps it ignored.
                preexec_fn=_default_sigint,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def ctrl_c(self, timeout: float = 90) -> int:
        """What Ctrl-C in its terminal does: SIGINT to its process group; returns the exit code."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGINT)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            raise


@pytest.fixture()
def services():
    started: list[Foreground] = []
    yield started
    for service in started:
        if service.popen.poll() is None:
            os.killpg(service.popen.pid, signal.SIGKILL)
            service.popen.wait(10)


def _wait_for(condition, what: str, services: list[Foreground], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for service in services:
            assert service.popen.poll() is None, f"{service.log.name} ended:\n{service.output()}"
        assert time.monotonic() < deadline, f"no {what} after {timeout:.0f} s"
        time.sleep(1)


def test_launch_join_run_interrupt_resume(tmp_path, insite, consortium, site_folder, services, monkeypatch):
    sites = {"site-a": site_folder("site-a", (2, 1)), "site-b": site_folder("site-b", (2, 1), register=False)}
    reviewed = stage_app(tmp_path / "reviewed-app")  # what 'coord run' ships, as the admins reviewed it
    for folder in sites.values():
        assert insite("site", "approve-app", reviewed, "--cache", folder / "cache").code == 0

    coordinator = CoordinatorDir(consortium)
    services.append(Foreground(tmp_path / "launch.log", "coord", "launch", "--dir", consortium))
    _wait_for(lambda: running_superlink(coordinator) is not None, "running SuperLink", services)
    done = insite("coord", "register-site", "site-b", sites["site-b"] / "keys" / "node.pub", "--dir", consortium)
    assert done.code == 0 and "registered with the running SuperLink" in done.out, done.out + done.err
    for name, folder in sites.items():
        services.append(Foreground(tmp_path / f"join-{name}.log", "site", "join", "--config", folder / "site.toml"))

    config = tmp_path / "federation.toml"
    config.write_text(TINY_RUN)
    run_dir = tmp_path / "run"
    printer = coord.round_printer

    def interrupt_after_round_one(settings):
        show = printer(settings)

        def on_round(row: dict) -> None:
            show(row)
            raise KeyboardInterrupt  # the coordinator presses Ctrl-C once round 1 is in

        return on_round

    monkeypatch.setattr(coord, "round_printer", interrupt_after_round_one)
    done = insite("coord", "run", "--config", config, "--run-dir", run_dir, "--dir", consortium)
    assert done.code == 130 and "round   1/2" in done.out and "insite coord resume" in done.out, (
        done.out + done.err + "".join(s.output() for s in services)
    )
    monkeypatch.setattr(coord, "round_printer", printer)
    assert RunRecord(run_dir).rounds()[0]["round"] == 1 and latest_checkpoint(run_dir) is not None

    done = insite("coord", "resume", run_dir, "--dir", consortium)
    assert done.code == 0, done.out + done.err + "".join(s.output() for s in services)
    record = RunRecord(run_dir).read()
    assert record["status"] == "completed" and len(record["flower_runs"]) == 2
    assert record["sites"] == ["site-a", "site-b"] and record["transport"]["fleet_proxy"]
    rows = RunRecord(run_dir).rounds()
    assert [r["round"] for r in rows] == [1, 2]
    assert all(set(r["sites"]) == {"site-a", "site-b"} and "dice" in r["sites"]["site-a"] for r in rows)
    assert "round   2/2" in done.out and (run_dir / "summary.json").is_file()

    for service in services:  # Ctrl-C ends every service cleanly and leaves no Flower process
        assert service.ctrl_c() == 0, service.output()
        assert "every process it started is gone" in service.output()
    assert running_superlink(coordinator) is None
    for home in [consortium / "flwr-home", *(f / "cache" / "flwr-home" for f in sites.values())]:
        assert kill_strays("FLWR_HOME", str(home)) == 0
