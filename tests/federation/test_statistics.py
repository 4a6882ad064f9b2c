"""Issue 15 part 3: federated data statistics, over the project's real ServerApp and ClientApp (stub Grid).

"Statistics: no per-case value leaves; a statistic under the minimum count is withheld; the figures
equal those computed directly from the sites' data." The direct computation is the tests' own
(harness/direct_statistics.py).
"""

from __future__ import annotations

import hashlib
import json
import queue

import nibabel as nib
import pytest
from flwr.app import ConfigRecord, MetricRecord, RecordDict
from flwr.common.serde import recorddict_to_proto

from client.cases import discover_cases
from client.egress import EgressRefused, check_reply
from client.ledger import Ledger
from common.settings import ModelSettings, RunSettings
from common.statistics import ORIENTATIONS, WITHHELD, decode, is_statistic
from deploy.coordinator.dashboard.api import statistics as dashboard_statistics
from deploy.coordinator.dashboard.source import DashboardSource
from deploy.coordinator.pki import ConsortiumFiles
from deploy.coordinator.run_state import describe_run
from deploy.coordinator.statistics_plot import write_statistics_plot
from deploy.coordinator.statistics_view import side_by_side
from deploy.demo.site_data import prepare_site
from deploy.demo.synthetic_sites import DEMO_SITES, write_site
from deploy.in_process.federation import FIRST_NODE_ID, run_in_process, site_grid
from harness.direct_statistics import as_sent, direct_statistics

MIN_COUNT = 5
SETTINGS = RunSettings.model_validate(
    {"task": "stats", "min_sites": 2, "round_timeout_s": 60, "stats": {"min_count": MIN_COUNT}}
)
STATS = SETTINGS.stats


@pytest.fixture(scope="module")
def demo_sites(tmp_path_factory) -> dict:
    """The demo's three sites (they differ on purpose: scanner units, modality, spacing, lesions) plus a small one."""
    root = tmp_path_factory.mktemp("sites")
    folders = {}
    for profile in DEMO_SITES:
        folders[profile.name] = root / profile.name
        write_site(profile, folders[profile.name], 5, 1, size=32)
    folders["site-small"] = root / "site-small"
    write_site(DEMO_SITES[0], folders["site-small"], 1, 1, size=32, seed=7)
    return folders


@pytest.fixture(scope="module")
def collected(demo_sites, tmp_path_factory) -> tuple[dict, dict]:
    run_dir = tmp_path_factory.mktemp("coordinator") / "runs" / "20261128-120000-stats"
    grid = site_grid(run_dir, SETTINGS, demo_sites)
    record = run_in_process(run_dir, SETTINGS, grid).read()
    return record, {"run_dir": run_dir, "grid": grid}


def test_figures_equal_a_direct_computation_from_the_sites_files(collected, demo_sites):
    record, _ = collected
    assert record["status"] == "completed" and record["settings"]["task"] == "stats"
    assert record["aggregation"] == "none" and record["transport"]["secure_aggregation"] is False
    sites = record["statistics"]["sites"]
    assert set(sites) == set(demo_sites) and record["statistics"]["failures"] == {}
    for site, folder in demo_sites.items():
        assert as_sent(sites[site]) == direct_statistics(folder, site, STATS)


def test_the_sites_differences_show(collected):
    sites = collected[0]["statistics"]["sites"]
    a, b, c = sites["site-a"], sites["site-b"], sites["site-c"]
    assert a["modality"] == b["modality"] == {"MR": 6} and c["modality"] == {"CT": 6}
    assert a["spacing_mm"]["z"] != b["spacing_mm"]["z"]  # site-b's thick slices
    assert a["intensity"]["MR"]["hist"] != b["intensity"]["MR"]["hist"]
    assert a["orientation"] == {"RAS": 6}
    rows = {row["figure"]: row["sites"] for row in side_by_side(collected[0]["statistics"])}
    assert rows["modality (cases)"]["site-c"] == "CT 6"
    assert rows["spacing z, mm (cases)"]["site-b"] == "2-3: 6"
    assert rows["spacing z, mm (cases)"]["site-a"] == "1-1.25: 6"
    assert rows["intensity, raw units"]["site-c"].startswith("CT: median in [")


def test_a_count_under_the_minimum_is_withheld(collected):
    sites = collected[0]["statistics"]["sites"]
    assert sites["site-a"]["cases"] == {"train": 5, "val": None}  # 1 validation case < 5: withheld, not 0
    small = sites["site-small"]  # 2 cases: every figure but zero case counts is withheld
    assert small["cases"] == {"train": None, "val": None}
    assert small["lesions"] is None and set(small["lesion_volume_ml"]) == {None}
    assert set(small["intensity"]["MR"]["hist"]) == {None} and set(small["spacing_mm"]["x"]) == {None}
    rows = {row["figure"]: row["sites"] for row in side_by_side(collected[0]["statistics"])}
    assert rows["training cases"]["site-small"] == "withheld"


def test_no_per_case_value_leaves(collected, demo_sites):
    """What the coordinator received is closed-vocabulary counts, and the ledger says so for every reply."""
    record, made = collected
    requests = [m for m in made["grid"].delivered if m.metadata.message_type == "query.stats"]
    assert len(requests) == len(demo_sites)
    for site in demo_sites:
        entries = Ledger(made["run_dir"].parent / "site-caches" / site).entries()
        assert [e["kind"] for e in entries] == ["query.stats"]
        assert "binned counts" in entries[0]["detail"] and "no per-case value" in entries[0]["detail"]
    case_ids = [case.case_id for folder in demo_sites.values() for case in discover_cases("x", folder)]
    stored = json.dumps(record["statistics"])
    assert not any(case_id in stored for case_id in case_ids)


def test_a_failing_site_is_named_and_the_others_come_back(demo_sites, tmp_path):
    folders = {name: demo_sites[name] for name in ("site-a", "site-b", "site-c")}
    grid = site_grid(tmp_path / "run", SETTINGS, folders, failing={FIRST_NODE_ID + 1: "disk on fire"})
    statistics = run_in_process(tmp_path / "run", SETTINGS, grid).read()["statistics"]
    assert set(statistics["sites"]) == {"site-a", "site-c"}
    assert statistics["failures"] == {"site-b": "disk on fire"}
    rows = side_by_side(statistics)
    assert rows[0]["sites"]["site-b"] == "failed: disk on fire"
    plot = write_statistics_plot(statistics, tmp_path / "statistics.png")
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_the_dashboard_shows_the_latest_statistics(collected, tmp_path):
    record, made = collected
    source = DashboardSource("test", ConsortiumFiles(tmp_path), tmp_path / "state.db", made["run_dir"].parent, ())
    shown = dashboard_statistics(source)
    assert shown["run"] == made["run_dir"].name and shown["min_count"] == MIN_COUNT
    assert shown["rows"] == side_by_side(record["statistics"])
    site_c = record["statistics"]["sites"]["site-c"]
    assert shown["intensity"]["site-c"]["CT"]["hist"] == site_c["intensity"]["CT"]["hist"]


MODEL = ModelSettings()


def _stats_reply(values: dict) -> RecordDict:
    return RecordDict({"stats": MetricRecord(values), "site": ConfigRecord({"name": "site-a"})})


@pytest.mark.parametrize(
    ("values", "why"),
    [
        ({"stats.cases.train": 2}, "below the minimum count"),
        ({"stats.intensity.MR.hist.03": 1.5}, "not a count"),
        ({"stats.case.site-a-000.volume": 12}, "not in the statistics vocabulary"),
        ({"stats.intensity.MR.min": 0}, "not in the statistics vocabulary"),
        ({"stats.orientation.RRA": 6}, "not in the statistics vocabulary"),
        ({"stats.lesions": [3, 4, 5]}, "not a count"),
        ({"stats.lesions": -7}, "below the minimum count"),
    ],
)
def test_the_egress_guard_lets_only_released_counts_out(values, why):
    with pytest.raises(EgressRefused, match=why):
        check_reply(_stats_reply(values), MODEL, "site-a", STATS)


def test_the_egress_guard_refuses_statistics_outside_a_statistics_request():
    with pytest.raises(EgressRefused, match="not part of a round's reply"):
        check_reply(_stats_reply({"stats.cases.train": 5}), MODEL, "site-a")
    check_reply(_stats_reply({"stats.cases.train": 5, "stats.cases.val": WITHHELD}), MODEL, "site-a", STATS)


def test_the_vocabulary_is_closed():
    assert len(ORIENTATIONS) == 48 and "RAS" in ORIENTATIONS and "LPS" in ORIENTATIONS
    assert is_statistic("stats.intensity.CT.hist.63") and not is_statistic("stats.intensity.CT.hist.100")
    assert not is_statistic("stats.cases.train.site-a")


def test_dry_run_prints_exactly_the_record_that_leaves(collected, demo_sites, insite, tmp_path):
    """'insite site stats --dry-run' shows what the coordinator received from that site, without a network."""
    record, made = collected
    site_toml = tmp_path / "site.toml"
    site_toml.write_text(
        f'[site]\nname = "site-b"\ndata_path = "{demo_sites["site-b"]}"\ncache_path = "{tmp_path / "cache"}"\n'
        'root_certificates = "ca.pem"\nprivate_key = "node.key"\n'
    )
    run_settings = tmp_path / "federation.toml"
    run_settings.write_text(f"[run]\ntask = 'stats'\n[run.stats]\nmin_count = {MIN_COUNT}\n")
    result = insite("site", "stats", "--dry-run", "--config", site_toml, "--run-settings", run_settings, "--json")
    assert result.code == 0, result.err
    printed = json.loads(result.out)
    assert printed["site"] == "site-b"
    content = RecordDict({"stats": MetricRecord(printed["stats"]), "site": ConfigRecord({"name": "site-b"})})
    # The ledger holds the SHA-256 of the exact bytes that left site-b: the dry run's record is them.
    ledger = Ledger(made["run_dir"].parent / "site-caches" / "site-b").entries()[0]
    assert ledger["sha256"] == hashlib.sha256(recorddict_to_proto(content).SerializeToString()).hexdigest()
    assert decode(printed["stats"], STATS) == record["statistics"]["sites"]["site-b"]
    assert all(is_statistic(name) for name in printed["stats"])
    refused = insite("site", "stats", "--config", site_toml)
    refused.one_line_error("--dry-run")


def test_ingest_records_the_modality_and_the_scanner_spacing(tmp_path):
    """The demo's site path (raw DICOM -> deid -> ingest) keeps what the statistics report: modality, spacing."""
    events: queue.Queue = queue.Queue()
    site_b = DEMO_SITES[1]  # MR, 0.9 x 0.9 x 2 mm
    prepare_site(site_b, tmp_path / site_b.name, 2, 0.5, 28, 3, events)
    cases = discover_cases(site_b.name, tmp_path / site_b.name / "data")
    assert [case.modality for case in cases] == ["MR", "MR"]
    for case in cases:
        assert nib.load(case.image).header.get_zooms()[:3] == pytest.approx((0.9, 0.9, 2.0))


def test_the_run_state_says_it_is_a_statistics_run(collected):
    record, made = collected
    assert describe_run(record, None, 0.0) == "completed (data statistics of 4 site(s))"


def test_too_few_sites_online_pauses_with_the_reason(demo_sites, tmp_path):
    settings = SETTINGS.model_copy(
        update={"min_sites": 3, "faults": SETTINGS.faults.model_copy(update={"quorum_wait_s": 0})}
    )
    folders = {name: demo_sites[name] for name in ("site-a", "site-b", "site-c")}
    grid = site_grid(tmp_path / "run", settings, folders, offline={FIRST_NODE_ID + 2})
    record = run_in_process(tmp_path / "run", settings, grid).read()
    assert record["status"] == "paused" and "2 sites online, 3 needed" in record["paused"]
    assert "statistics" not in record


def test_a_training_runs_digest_is_what_it_was_before_statistics():
    """Run folders and checkpoints made before statistics existed must still resume."""
    training = json.loads(RunSettings().canonical_json())
    assert "task" not in training and "stats" not in training
    assert json.loads(SETTINGS.canonical_json())["stats"]["min_count"] == MIN_COUNT
    assert RunSettings.model_validate(training).digest() == RunSettings().digest() != SETTINGS.digest()


def test_a_sites_own_minimum_count_is_a_floor_the_run_cannot_lower(demo_sites, tmp_path):
    folders = {name: demo_sites[name] for name in ("site-a", "site-b")}
    grid = site_grid(tmp_path / "run", SETTINGS, folders)
    grid.nodes[0].context.node_config["stats-min-count"] = 6  # site-a's site.toml: stats_min_count = 6
    sites = run_in_process(tmp_path / "run", SETTINGS, grid).read()["statistics"]["sites"]
    assert sites["site-a"]["cases"]["train"] is None  # 5 training cases < 6: withheld at site-a
    assert sites["site-b"]["cases"]["train"] == 5  # the run's 5 applies at site-b
    assert SETTINGS.stats.at_site(2).min_count == MIN_COUNT  # a lower site floor changes nothing
