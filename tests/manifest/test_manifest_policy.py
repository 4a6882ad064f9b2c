"""Default-deny: every refusal names the asset or site and the reason."""

from __future__ import annotations

from datetime import date

from publication.manifest.approvals import ApprovalCheck
from publication.manifest.policy import approval_refusals, asset_refusals, file_refusals
from publication.manifest.schema import load_manifest

TODAY = date(2026, 11, 22)


def refusals(path) -> list[str]:
    return [str(r) for r in asset_refusals(load_manifest(path).manifest, TODAY)]


def test_publishable_manifest_has_no_refusal(write_manifest):
    assert refusals(write_manifest(kinds=("architecture", "environment", "code", "weights"))) == []


def test_training_data_is_always_refused(write_manifest):
    found = refusals(write_manifest(kinds=("architecture", "weights", "training_data")))
    assert found == [
        "asset 'training_data': a federated run never holds training data; each site "
        "publishes its de-identified data through its own channels"
    ]


def test_exemption_outcome_is_refused_with_the_reason(write_manifest):
    found = refusals(write_manifest(answers={"commercialise": True}))
    assert len(found) == 2
    assert found[0].startswith("asset 'architecture': decision tree says 'request an exemption'")


def test_restricted_outcome_needs_restricted_access(write_manifest):
    found = refusals(write_manifest(answers={"dua_required": True}))
    assert found == [
        "asset 'weights': decision tree says 'publish with restrictions' but access is "
        "'public'; set access to 'dua' or 'consortium'"
    ]
    assert refusals(write_manifest(answers={"dua_required": True}, assets={"weights": {"access": "dua"}})) == []


def test_licence_and_embargo(write_manifest):
    found = refusals(
        write_manifest(assets={"architecture": {"licence": "Made-Up-1.0"}, "weights": {"embargo": date(2027, 1, 1)}})
    )
    assert found == [
        "asset 'architecture': 'Made-Up-1.0' is not a known SPDX identifier (nor a LicenseRef-... with its text)",
        "asset 'weights': under embargo until 2027-01-01",
    ]
    assert refusals(write_manifest(assets={"weights": {"embargo": date(2026, 1, 1)}})) == []


def test_every_contributing_site_must_approve():
    check = ApprovalCheck(valid=("site-a", "site-x"), rejected={"site-c": "signature ... does not verify"})
    found = [str(r) for r in approval_refusals(["site-a", "site-b", "site-c"], check)]
    assert found == ["site 'site-b': has not approved this manifest", "site 'site-c': signature ... does not verify"]
    assert [str(r) for r in approval_refusals([], check)] == [
        "run record: names no contributing site; nobody can approve its weights"
    ]


def test_changed_asset_file_is_named(write_manifest, tmp_path):
    loaded = load_manifest(write_manifest())
    (tmp_path / "weights.bin").write_bytes(b"weights bytes!\n")
    found = [str(r) for r in file_refusals(loaded.manifest, lambda _a, f: loaded.resolve(f))]
    assert found == [
        "asset 'weights' file weights.bin: SHA-256 differs from the manifest: the file changed after approval"
    ]
