"""The dashboard in a real browser (headless Chromium) over a recorded consortium folder.

The live federation (sites going offline, rounds appearing) is test_dashboard_federation.py.
"""

from __future__ import annotations

import pytest

from common.run_record import RunRecord
from deploy.coordinator.dashboard.server import DashboardServer, available_port, binding_for

pytest.importorskip("playwright.sync_api", reason="playwright is a test dependency: pip install -e '.[test]'")

from browser_page import SHOWN_MS, chart_points, chromium, open_page


def test_page_shows_the_recorded_run(consortium, chromium_path, tmp_path):
    (run_dir,) = consortium.run_dirs()
    rows = RunRecord(run_dir).rounds()
    binding = binding_for(consortium, "127.0.0.1", available_port("127.0.0.1"))
    errors: list[str] = []
    with DashboardServer(consortium, binding), chromium(chromium_path) as browser:
        page = open_page(browser, errors)
        page.goto(binding.url)
        page.wait_for_selector(f"#rounds tbody tr[data-round='{rows[-1]['round']}']", timeout=SHOWN_MS)
        page.wait_for_selector("#publication tr[data-asset='weights']", timeout=SHOWN_MS)
        page.screenshot(path=tmp_path / "dashboard-recorded.png", full_page=True)
        assert page.inner_text("#consortium") == "test consortium"
        assert page.inner_text("#run-state") == "completed (2 of 2 rounds done)"
        points = chart_points(page)
        assert points["global"] == [row["global_dice"] for row in rows]
        for site in ("site-a", "site-b"):
            assert points[site] == [row["sites"][site]["dice"] for row in rows]
        assert page.locator("#rounds tbody tr").count() == len(rows)
        assert page.inner_text("#sites tr[data-site='site-a'] td:nth-child(2)") == "never connected"
        assert page.inner_text("#history tbody tr td:nth-child(2)") == "completed"
        assert "approved by: site-a, site-b; every contributing site approved" in page.inner_text("#publication")
        assert page.inner_text("#problem") == ""
    assert errors == []


def test_beyond_loopback_the_browser_needs_the_token(consortium, chromium_path, tmp_path):
    binding = binding_for(consortium, "0.0.0.0", available_port("0.0.0.0"))
    url = f"https://127.0.0.1:{binding.port}/"
    errors: list[str] = []
    with DashboardServer(consortium, binding), chromium(chromium_path, trusted=consortium.pki.server_cert) as browser:
        page = open_page(browser, errors)
        refused = page.goto(url)
        assert refused is not None and refused.status == 401
        assert "login token" in page.inner_text("body")
        page.goto(f"{url}?token={binding.token}")
        assert "token" not in page.url  # swapped for an HttpOnly cookie at once
        page.wait_for_selector("#rounds tbody tr[data-round='2']", timeout=SHOWN_MS)
        assert page.evaluate("document.cookie") == ""  # the page's script cannot read the token
        page.screenshot(path=tmp_path / "dashboard-tls.png", full_page=True)
    assert errors == []
