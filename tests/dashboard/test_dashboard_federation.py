"""The dashboard following a real federation on loopback, in headless Chromium.

SuperLink + three SuperNodes (TLS, node authentication) as ``insite demo`` runs them; the page is
opened once and never reloaded. It must show the rounds the federation closes as they close, a
site whose SuperNode is killed as offline within Flower's heartbeat window, and the same rounds
and sites as the run record and the SuperLink hold. The page's screenshot is kept in the test's
temporary folder (CI uploads it as an artifact).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import pytest
from flwr.common.constant import HEARTBEAT_PATIENCE

from common.run_record import RunRecord
from common.settings import RunSettings
from deploy.coordinator.dashboard.server import DashboardServer, available_port, binding_for
from deploy.demo.synthetic_sites import DEMO_SITES, write_site
from deploy.demo.workspace import Workspace, provision_demo, run_demo_federation
from deploy.host.processes import ProcessSet, RestartPolicy
from deploy.site.app_approval import fab_digest
from deploy.site.supernode_launcher import DEFAULT_HEARTBEAT_S

pytest.importorskip("playwright.sync_api", reason="playwright is a test dependency: pip install -e '.[test]'")

from browser_page import SHOWN_MS, chart_points, chromium, open_page

# Slow (about 4 minutes of its own federation on 2 cores): the default run keeps the browser tests
# over a recorded consortium (test_dashboard_browser.py); `make test-slow` runs this live one.
pytestmark = [pytest.mark.federation, pytest.mark.slow, pytest.mark.timeout(600)]

# Rounds long enough, and enough of them, that the run is still going when the page has shown
# round 1 and the site is killed (a round of this tiny model with 2 steps takes ~1 s).
ROUNDS = 6
LOCAL_STEPS = 30
KILLED = "site-c"
#: Flower takes a site for gone this long after its last heartbeat; the page polls every 2 s on top.
HEARTBEAT_WINDOW_S = HEARTBEAT_PATIENCE * DEFAULT_HEARTBEAT_S
FIRST_ROUND_MS = 300_000


def test_dashboard_follows_a_live_federation(tmp_path, chromium_path):
    space = Workspace(tmp_path / "demo")
    names = [profile.name for profile in DEMO_SITES]
    for profile in DEMO_SITES:
        write_site(profile, space.site_dir(profile.name) / "data", 2, 1, size=32)
    provision_demo(space, names)
    settings = RunSettings.model_validate(
        {
            "rounds": ROUNDS,
            "min_sites": 2,
            "round_timeout_s": 300,
            "training": {"local_steps": LOCAL_STEPS, "patch_size": 16, "batch_size": 1},
            "model": {"channels": [4, 8, 16], "strides": [2, 2]},
            "aggregation": {"mode": "plain"},
            "faults": {"rejoin_wait_s": 1, "straggler_grace_s": 5},
        }
    )
    RunRecord(space.run_dir).create("dashboard-test", settings, transport={"tls": True, "node_auth": True})
    held: list[ProcessSet] = []

    @contextmanager
    def hold(processes: ProcessSet) -> Iterator[None]:
        held.append(processes)
        yield

    binding = binding_for(space.dashboard, "127.0.0.1", available_port("127.0.0.1"))
    errors: list[str] = []
    with (
        DashboardServer(space.dashboard, binding),
        ThreadPoolExecutor(1) as pool,
        chromium(chromium_path) as browser,
    ):
        federation = pool.submit(run_demo_federation, space, settings, lambda _: None, lambda _: None, None, hold)
        page = open_page(browser, errors)
        page.goto(binding.url)
        page.evaluate("window.loadedOnce = true")  # gone if the page were ever reloaded
        page.wait_for_selector("#rounds tbody tr[data-round='1']", timeout=FIRST_ROUND_MS)
        for name in names:
            page.wait_for_selector(f"#sites tr[data-site='{name}'][data-online='true']", timeout=SHOWN_MS)
        assert chart_points(page)["global"][0] == RunRecord(space.run_dir).rounds()[0]["global_dice"]

        supernode = held[0].find(f"supernode-{KILLED}")
        supernode.restart = RestartPolicy(first_delay_s=3600, max_delay_s=3600)  # its machine stays down
        os.killpg(supernode.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        page.wait_for_selector(
            f"#sites tr[data-site='{KILLED}'][data-online='false']", timeout=(HEARTBEAT_WINDOW_S + 10) * 1000
        )
        took = time.monotonic() - killed_at
        assert took <= HEARTBEAT_WINDOW_S + 5, f"{KILLED} shown offline {took:.0f} s after it was killed"

        page.wait_for_selector("#rounds tbody tr[data-round='2']", timeout=FIRST_ROUND_MS)  # a new round, live
        assert page.evaluate("window.loadedOnce") is True

        record = federation.result(timeout=FIRST_ROUND_MS / 1000)
        assert record["status"] == "completed"
        page.wait_for_selector(f"#rounds tbody tr[data-round='{ROUNDS}']", timeout=SHOWN_MS)
        page.wait_for_function(
            "document.getElementById('run-state').textContent.startsWith('completed')", timeout=SHOWN_MS
        )
        page.screenshot(path=tmp_path / "dashboard-live.png", full_page=True)
        assert page.evaluate("window.loadedOnce") is True

        rows = RunRecord(space.run_dir).rounds()
        points = chart_points(page)
        assert points["global"] == [row["global_dice"] for row in rows]
        assert len(points) == 1 + len(names)
        last = rows[-1]  # trained while the killed site was gone: it either failed, or was not asked
        assert "num_train" not in last["sites"].get(KILLED, {})
        assert KILLED not in last["sites_online"] or KILLED in last["failures"]
        if KILLED in last["failures"]:
            assert f"{KILLED}: " in page.inner_text(f"#rounds tbody tr[data-round='{last['round']}']")

        api = httpx.get(binding.url + "api/current").json()
        assert api["record"] == RunRecord(space.run_dir).read()
        assert [(r["round"], r["global_dice"], r["sites_online"]) for r in api["rounds"]] == [
            (row["round"], row["global_dice"], row["sites_online"]) for row in rows
        ]
        assert all(run["bytes_to_sites"] > 0 and run["bytes_from_sites"] > 0 for run in api["flower_runs"])
        shipped = fab_digest(space.root / "app")
        assert {run["app_digest"] for run in api["flower_runs"]} == {shipped}
        sites = {site["name"]: site for site in httpx.get(binding.url + "api/sites").json()["sites"]}
        assert set(sites) == set(names)
        assert all(site["approved_app"] == shipped and site["key_fingerprint"] for site in sites.values())
    assert errors == []
