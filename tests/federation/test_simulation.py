"""``insite simulate``: the project's apps with many virtual sites in Flower's simulation engine (real Ray)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from common.run_record import RunRecord, latest_checkpoint, load_checkpoint
from common.settings import RunSettings, load_run_settings
from configs import shipped
from server.rounds import drawn

TINY = """
[run]
rounds = 2
min_sites = 2
sites_per_round = 3
round_timeout_s = 300
[run.aggregation]
mode = "plain"
[run.faults]
quorum_wait_s = 60
rejoin_wait_s = 0
[run.training]
local_steps = 1
batch_size = 1
patch_size = 16
mixed_precision = false
[run.model]
channels = [4, 8, 16]
strides = [2, 2]
num_res_units = 1
"""


def test_each_round_draws_a_reproducible_sample_of_the_online_sites():
    online = {100 + n: f"sim-{n:03d}" for n in range(20)}
    first = drawn(online, 5, seed=0, round_number=1)
    assert len(first) == 5 and all(online[node] == name for node, name in first.items())
    assert drawn(dict(reversed(online.items())), 5, seed=0, round_number=1) == first  # node order does not matter
    assert drawn(online, 5, seed=0, round_number=2) != first
    assert drawn(online, 0, seed=0, round_number=1) == online and drawn(online, 30, 0, 1) == online


def test_a_draw_smaller_than_the_quorum_is_refused():
    with pytest.raises(ValueError, match="sites_per_round"):
        RunSettings.model_validate({"min_sites": 3, "sites_per_round": 2})


def test_the_shipped_simulation_settings_are_valid():
    assert load_run_settings(shipped("simulation.toml")).sites_per_round == 10


@pytest.mark.timeout(600)
def test_simulate_trains_a_draw_of_sites_each_round_and_reports_rounds_and_memory(tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    workspace = tmp_path / "simulation"
    command = [sys.executable, "-c", "from insite.cli import main; main()", "simulate", "--sites", "5"]
    done = subprocess.run(
        [*command, "--config", str(config), "--workspace", str(workspace), "--cpus", "2"],
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "round   2/2" in done.stdout and "3 of 5 sites trained" in done.stdout

    summary = json.loads((workspace / "simulation.json").read_text())
    assert summary["status"] == "completed" and summary["rounds"] == 2 and summary["sites"] == 5
    assert summary["coordinator_peak_rss_mb"] > 100 and summary["rounds_per_minute"] > 0

    record = RunRecord(workspace / "run")
    every_site = {n: f"sim-{n:03d}" for n in range(5)}
    for row in record.rounds():
        expected = sorted(drawn(every_site, 3, seed=0, round_number=row["round"]).values())
        assert row["sites_drawn"] == expected
        assert sorted(row["sites_online"]) == sorted(every_site.values())
        trained = sorted(site for site, scores in row["sites"].items() if "num_train" in scores)
        assert trained == expected
    checkpoint = latest_checkpoint(Path(workspace / "run"))
    assert checkpoint is not None and load_checkpoint(checkpoint).round == 2


def test_simulate_refuses_a_draw_below_the_quorum_in_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", "from insite.cli import main; main()", "simulate", "--sites", "5", "--per-round", "1"]
        + ["--workspace", str(tmp_path / "never")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "sites_per_round (1) is below min_sites (2)" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "never").exists()
