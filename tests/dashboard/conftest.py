"""A recorded consortium for the dashboard's fast tests: a real run (the project's ServerApp and
ClientApp over the in-process Grid), registered site keys, a published manifest with approvals.

Only the SuperLink is absent (so no site has ever connected): the federation test has that part.
"""

from __future__ import annotations

import shutil

import pytest

from common.settings import RunSettings
from deploy.coordinator.dashboard.source import DashboardSource
from deploy.coordinator.pki import LOOPBACK_NAMES, ConsortiumFiles, create_ca, issue_server_certificate
from deploy.demo.publish import demo_publish
from deploy.in_process.federation import run_in_process, site_grid
from deploy.node_keys import create_site_key
from harness.federation import write_sphere_site

SITES = ("site-a", "site-b")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def small_settings(rounds: int) -> RunSettings:
    return RunSettings.model_validate(
        {
            "rounds": rounds,
            "min_sites": 2,
            "round_timeout_s": 60,
            "model": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1},
            "training": {"local_steps": 2, "patch_size": 32, "mixed_precision": False},
            "aggregation": {"mode": "plain"},
        }
    )


@pytest.fixture(scope="session")
def consortium(tmp_path_factory) -> DashboardSource:
    """A consortium folder with two registered sites, one completed 2-round run and its published manifest."""
    root = tmp_path_factory.mktemp("consortium")
    pki = ConsortiumFiles(root)
    create_ca(pki)
    issue_server_certificate(pki, LOOPBACK_NAMES)
    keys = {}
    for site in SITES:
        keys[site] = root / "site-keys" / site / "node.key"
        create_site_key(keys[site], keys[site].with_suffix(".pub"))
        pki.site_public_key(site).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(keys[site].with_suffix(".pub"), pki.site_public_key(site))
    folders = {
        site: write_sphere_site(root / "data" / site, 10 * index, train=2, val=1) for index, site in enumerate(SITES)
    }
    run_dir = root / "runs" / "20261128-120000"
    settings = small_settings(2)
    run_in_process(run_dir, settings, site_grid(run_dir, settings, folders))
    demo_publish(run_dir, keys, root / "publish", consortium_keys=root / "sites")
    return DashboardSource(
        name="test consortium",
        pki=pki,
        database=root / "superlink" / "state.db",
        runs=root / "runs",
        manifests=(root / "publish" / "manifest.toml",),
    )


@pytest.fixture()
def chromium_path() -> str:
    if CHROMIUM is None:
        pytest.skip("no chromium on this machine: install Debian's 'chromium' package ('make system-deps')")
    pytest.importorskip("playwright.sync_api", reason="playwright is a test dependency: pip install -e '.[test]'")
    return CHROMIUM
