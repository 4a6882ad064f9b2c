"""Export and verify fail, naming the culprit, on tampering, a missing approval, or training data."""

from __future__ import annotations

import hashlib
import json
import shutil
import tomllib
from pathlib import Path

import pytest
import tomli_w
import torch

from common.errors import ExportError
from common.keys import load_private_key
from common.run_record import RunRecord, checkpoint_path, load_checkpoint
from deploy.demo.publish import demo_publish, ensure_key
from deploy.node_keys import create_site_key
from publication.contents import derive
from publication.draft import DEFAULT_TEMPLATE, draft_manifest
from publication.export import export_run
from publication.manifest.approvals import (
    ApprovalSet,
    approve_manifest,
    load_approval_set,
    manifest_digest,
    write_model,
)
from publication.signing import create_key, public_key_path
from publication.verify import listed_files, verify_export


def failed(report) -> dict[str, str]:
    return {check.name: check.detail for check in report.checks if not check.ok}


def test_published_export_passes_every_check(published):
    assert [c.name for c in published.checks] == [
        "checksums",
        "manifest",
        "assets",
        "run record",
        "approvals",
        "policy",
        "metadata",
        "model",
        "bundle files",
    ]
    assert all(c.ok for c in published.checks)
    assert published.summary()[-1] == f"verified MONAI bundle: {published.bundle}"
    assert set(published.outcomes.values()) == {"may publish"}
    assert verify_export(published.export).ok  # with the keys shipped in the export


def test_one_byte_changed_in_any_file_is_named(published, tmp_path):
    names = listed_files(published.export)
    assert {
        "bundle/models/model.pt",
        "bundle/configs/metadata.json",
        "manifest.toml",
        "approvals.json",
        "assets/weights/round-0002.pt",
        "bundle/LICENSE",
    } <= set(names)
    for name in names:
        target = tmp_path / name.replace("/", "_")
        shutil.copytree(published.export, target)
        path = target / name
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
        report = verify_export(target)
        assert not report.ok, name
        assert f"{name}: SHA-256 mismatch" in failed(report)["checksums"]


def _resum(out: Path) -> None:
    """What a forger would do: rewrite SHA256SUMS (nobody signs it) after editing the bundle."""
    lines = [f"{hashlib.sha256((out / n).read_bytes()).hexdigest()}  {n}" for n in listed_files(out)]
    (out / "SHA256SUMS").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("name", ["bundle/docs/README.md", "bundle/LICENSE"])
def test_edited_text_with_regenerated_sums_is_named(export_copy, name):
    path = export_copy / name
    path.write_text(path.read_text().replace("CC-BY-4.0", "CC0-1.0").replace("site-b", "site-x"))
    _resum(export_copy)
    problems = failed(verify_export(export_copy))
    assert list(problems) == ["bundle files"] and problems["bundle files"].startswith(name.removeprefix("bundle/"))


def test_edited_inference_config_with_regenerated_sums_is_named(export_copy):
    path = export_copy / "bundle" / "configs" / "inference.json"
    config = json.loads(path.read_text())
    config["preprocessing"]["transforms"].pop(2)  # drop the intensity normalisation
    path.write_text(json.dumps(config))
    _resum(export_copy)
    assert failed(verify_export(export_copy))["bundle files"].startswith("configs/inference.json")


def test_swapped_weights_with_regenerated_sums_are_named(export_copy):
    path = export_copy / "bundle" / "models" / "model.pt"
    weights = torch.load(path, weights_only=True)
    name = next(iter(weights))
    weights[name] = weights[name] + 1e-3
    torch.save(weights, path)
    _resum(export_copy)
    assert failed(verify_export(export_copy)) == {
        "model": "models/model.pt differs from the approved checkpoint's weights"
    }


def test_added_file_is_named(export_copy):
    (export_copy / "bundle" / "models" / "extra.pt").write_bytes(b"x")
    assert "bundle/models/extra.pt: not listed" in failed(verify_export(export_copy))["checksums"]


def test_removed_approval_is_named(export_copy):
    path = export_copy / "approvals.json"
    approvals = load_approval_set(path)
    write_model(
        path,
        ApprovalSet(
            manifest_sha256=approvals.manifest_sha256, approvals=[a for a in approvals.approvals if a.site != "site-b"]
        ),
    )
    problems = failed(verify_export(export_copy))
    assert problems["approvals"] == "site 'site-b': has not approved this manifest"


def test_keys_other_than_the_consortium_s_are_refused(export_copy, tmp_path):
    keys = tmp_path / "my-keys"
    keys.mkdir()
    for site in ("site-a", "site-b", "site-c"):
        (keys / f"{site}.pub").write_bytes(create_key(tmp_path / "impostor" / f"{site}.key").read_bytes())
    detail = failed(verify_export(export_copy, keys))["approvals"]
    assert "signature by 'site-a' does not verify with its consortium key" in detail


def _collected(manifest: Path, sites: dict[str, Path], drop: str | None = None) -> Path:
    raw = manifest.read_bytes()
    approvals = [approve_manifest(site, raw, load_private_key(key)) for site, key in sites.items() if site != drop]
    target = manifest.with_suffix(".approvals.json")
    write_model(target, ApprovalSet(manifest_sha256=manifest_digest(raw), approvals=approvals))
    return target


@pytest.fixture
def drafted(run_dir, tmp_path):
    """A drafted manifest, three sites with their own keys, and the coordinator's key folder."""
    sites = {site: tmp_path / "sites" / site / "approval.key" for site in ("site-a", "site-b", "site-c")}
    keys = tmp_path / "consortium-keys"
    keys.mkdir()
    for site, key in sites.items():
        shutil.copyfile(public_key_path(ensure_key(key)), keys / f"{site}.pub")
    manifest = draft_manifest(run_dir, DEFAULT_TEMPLATE, tmp_path / "manifest.toml").path
    return manifest, sites, keys


def test_export_refuses_a_missing_approval(run_dir, drafted, tmp_path):
    manifest, sites, keys = drafted
    approvals = _collected(manifest, sites, drop="site-c")
    with pytest.raises(ExportError, match=r"site 'site-c': has not approved this manifest"):
        export_run(run_dir, manifest, approvals, keys, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_export_refuses_training_data(run_dir, drafted, tmp_path):
    manifest, sites, keys = drafted
    data = tmp_path / "cases.csv"
    data.write_text("case,label\n")
    document = tomllib.loads(manifest.read_text())
    document["assets"].append(
        {
            "kind": "training_data",
            "licence": "CC-BY-4.0",
            "access": "public",
            "files": [{"path": str(data), "sha256": hashlib.sha256(data.read_bytes()).hexdigest()}],
        }
    )
    manifest.write_text(tomli_w.dumps(document))
    approvals = _collected(manifest, sites)  # even with every site's approval
    with pytest.raises(ExportError, match=r"asset 'training_data': a federated run never holds training data"):
        export_run(run_dir, manifest, approvals, keys, tmp_path / "out")


def test_export_refuses_an_asset_changed_after_approval(run_dir, drafted, tmp_path):
    manifest, sites, keys = drafted
    approvals = _collected(manifest, sites)
    checkpoint = run_dir / "checkpoints" / "round-0002.pt"
    data = bytearray(checkpoint.read_bytes())
    data[-10] ^= 0x01
    checkpoint.write_bytes(bytes(data))
    with pytest.raises(ExportError, match=r"asset 'weights' file .*round-0002.pt: SHA-256 differs"):
        export_run(run_dir, manifest, approvals, keys, tmp_path / "out")


def test_export_refuses_a_manifest_changed_after_approval(run_dir, drafted, tmp_path):
    manifest, sites, keys = drafted
    approvals = _collected(manifest, sites)
    manifest.write_bytes(manifest.read_bytes() + b"\n")
    with pytest.raises(ExportError, match=r"approvals: were collected for another version of the manifest"):
        export_run(run_dir, manifest, approvals, keys, tmp_path / "out")


def test_export_after_all_approvals_and_no_overwrite(run_dir, drafted, tmp_path):
    manifest, sites, keys = drafted
    result = export_run(run_dir, manifest, _collected(manifest, sites), keys, tmp_path / "out")
    assert result.report.ok and result.bundle == tmp_path / "out" / "bundle"
    with pytest.raises(ExportError, match="already exists"):
        export_run(run_dir, manifest, _collected(manifest, sites), keys, tmp_path / "out")


def test_demo_reports_refusal_without_signing(run_dir, tmp_path):
    text = DEFAULT_TEMPLATE.read_text().replace("commercialise = false", "commercialise = true")
    refusing = tmp_path / "template.toml"
    refusing.write_text(text)
    result = demo_publish(run_dir, {"site-a": tmp_path / "a.key"}, tmp_path / "pub", template=refusing)
    assert result.bundle is None and not result.published
    assert result.outcomes == {"architecture": "request an exemption", "weights": "request an exemption"}
    assert result.refusals[0].startswith("asset 'architecture': decision tree says 'request an exemption'")
    assert not (tmp_path / "pub" / "approvals").exists()


def test_demo_reports_a_contributor_without_approval(run_dir, tmp_path):
    result = demo_publish(run_dir, {"site-a": tmp_path / "a.key", "site-b": tmp_path / "b.key"}, tmp_path / "pub")
    assert not result.published and result.export is None
    assert "site 'site-c': has not approved this manifest" in result.refusals[0]
    assert "not published:" in result.summary()


def test_model_card_and_metadata_content(published):
    """The card states the exported round's scores, exactly as the round loop recorded them."""
    run = RunRecord(published.manifest.parent.parent / "run")
    final = run.rounds()[-1]
    assert final["round"] == 2 and set(final["sites"]) == {"site-a", "site-b", "site-c"}
    bundle = published.bundle
    card = (bundle / "docs" / "README.md").read_text()
    assert "across 3 sites (site-a, site-b, site-c)" in card and "2 rounds" in card and "`fedavg`" in card
    assert "Exported: round 2 of the 2 trained, the run's final round. The round was fixed before training" in card
    assert f"round 2: {final['global_dice']:.4f}" in card
    for site, scores in final["sites"].items():
        assert f"| {site} | {int(scores['num_val'])} | {scores['dice']:.4f} |" in card
    dice = [scores["dice"] for scores in final["sites"].values()]
    assert f"Spread across sites: min {min(dice):.4f}, max {max(dice):.4f}" in card
    assert "TLS on every connection: yes" in card
    assert "Secure aggregation (coordinator sees only sums): no" in card
    assert "Differential privacy: none" in card
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["eval_metrics"]["mean_dice"] == pytest.approx(final["global_dice"])
    assert meta["eval_metrics"]["dice_site-b"] == pytest.approx(final["sites"]["site-b"]["dice"])
    assert meta["eval_metrics"]["site_dice_min"] == pytest.approx(min(dice))
    assert meta["eval_metrics"]["exported_round"] == 2 and meta["eval_metrics"]["round_chosen_on_held_out_dice"] == 0
    assert meta["label_classes"] == "0: background, 1: lesion"
    assert "SPDX-License-Identifier: CC-BY-4.0" in (bundle / "LICENSE").read_text()
    assert (bundle / "models" / "model.ts").stat().st_size > 0


def test_every_checkpoint_carries_its_rounds_scores(trained_run):
    """The cause of an empty card: a round's Dice arrives after its checkpoint was first written."""
    rows = RunRecord(trained_run).rounds()
    assert [row["round"] for row in rows] == [1, 2]
    for row in rows:
        saved = load_checkpoint(checkpoint_path(trained_run, row["round"])).metrics
        assert saved["global_dice"] == row["global_dice"] and saved["sites"] == row["sites"]
        assert all("dice" in scores for scores in saved["sites"].values())


def test_best_round_is_exported_with_its_reason(run_dir, tmp_path):
    rows = RunRecord(run_dir).rounds()
    best = max(rows, key=lambda row: (row["global_dice"], row["round"]))
    loaded = draft_manifest(run_dir, DEFAULT_TEMPLATE, tmp_path / "manifest.toml", selection="best")
    assert loaded.manifest.run.round == best["round"] and loaded.manifest.run.selection == "best"
    weights = loaded.manifest.asset("weights")
    assert weights.files[0].path.endswith(f"round-{best['round']:04d}.pt")
    run = RunRecord(run_dir)
    derived = derive(
        loaded.manifest, run.read(), run.settings(), load_checkpoint(checkpoint_path(run_dir, best["round"])), {}
    )
    assert "the round with the best global Dice. The round was chosen by its global Dice on these same held-out" in (
        derived.card
    )
    assert "optimistic (selection bias)" in derived.card
    assert derived.metadata["eval_metrics"]["exported_round"] == best["round"]
    assert derived.metadata["eval_metrics"]["round_chosen_on_held_out_dice"] == 1


def test_demo_publishes_with_provisioned_node_keys(run_dir, tmp_path):
    """As ``insite demo`` would call it: the sites' node keys and the PKI's registered public keys."""
    registered = tmp_path / "consortium" / "sites"
    registered.mkdir(parents=True)
    node_keys = {site: tmp_path / "sites" / site / "keys" / "node.key" for site in ("site-a", "site-b", "site-c")}
    for site, key in node_keys.items():
        create_site_key(key, key.with_suffix(".pub"))
        shutil.copyfile(key.with_suffix(".pub"), registered / f"{site}.pub")
    result = demo_publish(run_dir, node_keys, tmp_path / "publish", consortium_keys=registered)
    assert result.published, result.summary()
    assert verify_export(result.export, registered).ok


def test_purpose_restricted_licence_under_a_dua_is_exported(run_dir, tmp_path):
    """Seed 003's purpose-restricted terms for the weights, shared on request under a DUA."""
    text = DEFAULT_TEMPLATE.read_text().replace("dua_required = false", "dua_required = true")
    text = text.replace(
        'licence = "CC-BY-4.0"\naccess = "public"',
        (
            'licence = "LicenseRef-insite-research-BY"\naccess = "dua"\nlicence_text = """\n'
            "Permission to use these model weights for the purpose of medical imaging research is hereby\n"
            'granted, provided that publications resulting from their use cite <this model>.\n"""'
        ),
    )
    template = tmp_path / "template.toml"
    template.write_text(text)
    result = demo_publish(
        run_dir, {s: tmp_path / f"{s}.key" for s in ("site-a", "site-b", "site-c")}, tmp_path / "pub", template=template
    )
    assert result.published, result.summary()
    assert result.outcomes["weights"] == "publish with restrictions"
    licence = (result.bundle / "LICENSE").read_text()
    assert "SPDX-License-Identifier: LicenseRef-insite-research-BY" in licence
    assert "for the purpose of medical imaging research" in licence and "Do not redistribute publicly." in licence
    assert "on request under a data use agreement" in (result.bundle / "docs" / "README.md").read_text()
