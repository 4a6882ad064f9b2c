"""The dashboard's "Data statistics" panel in a real browser, over a recorded 'insite coord stats' run."""

from __future__ import annotations

import pytest

from common.run_record import RunRecord
from common.settings import RunSettings
from deploy.coordinator.dashboard.server import DashboardServer, available_port, binding_for
from deploy.coordinator.dashboard.source import DashboardSource
from deploy.coordinator.pki import ConsortiumFiles
from deploy.demo.synthetic_sites import DEMO_SITES, write_site
from deploy.in_process.federation import run_in_process, site_grid

pytest.importorskip("playwright.sync_api", reason="playwright is a test dependency: pip install -e '.[test]'")

from browser_page import SHOWN_MS, chromium, open_page

SETTINGS = RunSettings.model_validate({"task": "stats", "min_sites": 3, "stats": {"min_count": 5}})


def test_the_panel_shows_the_sites_side_by_side(tmp_path, chromium_path):
    folders = {}
    for profile in DEMO_SITES:
        folders[profile.name] = tmp_path / "data" / profile.name
        write_site(profile, folders[profile.name], 5, 0, size=32)
    run_dir = tmp_path / "runs" / "20261128-120000-stats"
    run_in_process(run_dir, SETTINGS, site_grid(run_dir, SETTINGS, folders))
    assert RunRecord(run_dir).read()["statistics"]["failures"] == {}
    source = DashboardSource("stats", ConsortiumFiles(tmp_path), tmp_path / "superlink.db", tmp_path / "runs", ())
    binding = binding_for(source, "127.0.0.1", available_port("127.0.0.1"))
    errors: list[str] = []
    with DashboardServer(source, binding), chromium(chromium_path) as browser:
        page = open_page(browser, errors)
        page.goto(binding.url)
        page.wait_for_selector("#statistics-table tbody tr", timeout=SHOWN_MS)
        page.screenshot(path=tmp_path / "dashboard-statistics.png", full_page=True)
        heads = page.locator("#statistics-table thead th").all_inner_texts()
        assert heads == ["figure", "site-a", "site-b", "site-c"]
        row = page.locator("#statistics-table tbody tr", has_text="modality (cases)").all_inner_texts()[0]
        assert row.split("\t") == ["modality (cases)", "MR 5", "MR 5", "CT 5"]
        drawn = page.evaluate("window.intensityChart.data.datasets.map(d => [d.label, d.data.length])")
        assert drawn == [["site-a (MR)", 64], ["site-b (MR)", 64], ["site-c (CT)", 64]]
        assert page.is_hidden("#statistics-none")
        assert page.inner_text("#run-state") == "completed (data statistics of 3 site(s))"
        history = page.locator("#history tbody tr", has_text=run_dir.name).all_inner_texts()[0].split("\t")
        assert history[3] == "–"  # a statistics run trains no round: no "0 of 10"
    assert errors == []
