"""Issue 15 part 3, done when: "'insite coord stats' shows the three sites' differences before training".

As operators run it, on loopback: 'coord launch', three 'site join' processes (the demo's three
sites, which differ on purpose), then 'insite coord stats'. The figures the coordinator shows
equal a direct computation from each site's files; each site's ledger holds its one reply.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ops.test_deployment import (
    Foreground,
    _wait_for,
    services,  # noqa: F401  (the fixture that reaps the services)
)

from client.ledger import Ledger
from common.run_record import RunRecord
from common.settings import StatsSettings
from deploy.coordinator.app_bundle import stage_app
from deploy.coordinator.consortium import CoordinatorDir, running_superlink
from deploy.coordinator.dashboard.api import statistics as dashboard_statistics
from deploy.coordinator.dashboard.source import consortium_source
from harness.direct_statistics import as_sent, direct_statistics

# Slow (2-3 minutes of its own deployment on 2 cores): the default run keeps the harness tests of the
# same code in tests/federation/test_statistics.py; `make test-slow` runs this one.
pytestmark = [pytest.mark.federation, pytest.mark.slow, pytest.mark.timeout(600)]

STATS_RUN = """[run]
min_sites = 3
round_timeout_s = 120
[run.faults]
quorum_wait_s = 120
straggler_grace_s = 30
[run.stats]
min_count = 5
"""


def test_coord_stats_shows_the_three_sites_differences(tmp_path, insite, consortium, site_folder, services):  # noqa: F811
    sites = {name: site_folder(name, (5, 1)) for name in ("site-a", "site-b", "site-c")}
    reviewed = stage_app(tmp_path / "reviewed-app")
    for folder in sites.values():
        assert insite("site", "approve-app", reviewed, "--cache", folder / "cache").code == 0
    coordinator = CoordinatorDir(consortium)
    services.append(Foreground(tmp_path / "launch.log", "coord", "launch", "--dir", consortium, "--no-dashboard"))
    _wait_for(lambda: running_superlink(coordinator) is not None, "running SuperLink", services)
    for name, folder in sites.items():
        services.append(Foreground(tmp_path / f"join-{name}.log", "site", "join", "--config", folder / "site.toml"))
    config = tmp_path / "federation.toml"
    config.write_text(STATS_RUN)

    done = insite("coord", "stats", "--config", config, "--dir", consortium)
    logs = "".join(s.output() for s in services)
    assert done.code == 0, done.out + done.err + logs
    assert "CT 6" in done.out and "MR 6" in done.out  # site-c's CT beside the others' MR
    assert "2-3: 6" in done.out and "1-1.25: 6" in done.out  # site-b's thick slices
    (run_dir,) = (consortium / "runs").glob("*-stats")
    record = RunRecord(run_dir).read()
    assert record["status"] == "completed" and record["statistics"]["failures"] == {}
    assert (run_dir / "statistics.png").read_bytes().startswith(b"\x89PNG")
    settings = StatsSettings(min_count=5)
    for name, folder in sites.items():
        assert as_sent(record["statistics"]["sites"][name]) == direct_statistics(folder / "data", name, settings)
        replies = [e for e in Ledger(folder / "cache").entries() if e["kind"] == "query.stats"]
        assert len(replies) == 1 and "no per-case value" in replies[0]["detail"]
    a, b = record["statistics"]["sites"]["site-a"], record["statistics"]["sites"]["site-b"]
    assert a["cases"] == {"train": 5, "val": None}  # one validation case: withheld, not zero
    assert a["lesion_volume_ml"] != b["lesion_volume_ml"]

    again = insite("coord", "stats", "--config", config, "--dir", consortium, "--json")  # as a script asks
    assert again.code == 0, again.out + again.err
    answer = json.loads(again.out)
    assert answer["sites"] == record["statistics"]["sites"] and answer["plot"].endswith("statistics.png")
    shown = dashboard_statistics(consortium_source(coordinator))  # the latest statistics
    assert shown["run"] == Path(answer["run_dir"]).name != run_dir.name
    assert json.dumps(shown["rows"]).count("CT 6") == 1

    for service in services:
        assert service.ctrl_c() == 0, service.output()
