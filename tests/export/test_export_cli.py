"""The researcher's whole path through the real ``insite`` entry point (in-process for speed)."""

from __future__ import annotations

import json
import shutil
import stat


def test_draft_explain_approve_collect_export_verify(run_dir, tmp_path, monkeypatch, insite):
    monkeypatch.setenv("COLUMNS", "200")
    keys = tmp_path / "consortium-keys"
    keys.mkdir()
    for site in ("site-a", "site-b", "site-c"):
        key = tmp_path / site / "approval.key"
        code, out, _ = insite("manifest", "keygen", key)
        assert code == 0 and "give this file to the coordinator" in out
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        shutil.copyfile(key.with_suffix(".pub"), keys / f"{site}.pub")

    manifest = tmp_path / "manifest.toml"
    code, out, _ = insite(
        "manifest",
        "draft",
        run_dir,
        "--out",
        manifest,
        "--template",
        "configs/manifest.toml",
        "--code",
        "publication/bundle_configs.py",
    )
    assert code == 0 and manifest.is_file()

    code, out, _ = insite("manifest", "explain", manifest, "--json")
    explained = json.loads(out)
    assert [(d["asset"], d["outcome"]) for d in explained] == [
        ("architecture", "may publish"),
        ("code", "may publish"),
        ("weights", "may publish"),
    ]
    code, out, _ = insite("manifest", "explain", manifest)
    assert "[insite: weights are learned from the data]" in out

    for site in ("site-a", "site-b"):
        code, _, _ = insite("manifest", "approve", manifest, "--site", site, "--key", tmp_path / site / "approval.key")
        assert code == 0
    approvals = sorted(tmp_path.glob("manifest.*.approval.json"))
    code, out, _ = insite("manifest", "collect", manifest, *approvals, "--run", run_dir, "--keys", keys, "--json")
    assert json.loads(out)["missing"] == ["site-c"]

    out_dir = tmp_path / "export"
    code, _, err = insite("export", run_dir, "--manifest", manifest, "--out", out_dir, "--keys", keys)
    assert code == 2 and "site 'site-c': has not approved this manifest" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err

    insite("manifest", "approve", manifest, "--site", "site-c", "--key", tmp_path / "site-c" / "approval.key")
    approvals = sorted(tmp_path.glob("manifest.*.approval.json"))
    code, out, _ = insite("manifest", "collect", manifest, *approvals, "--run", run_dir, "--keys", keys, "--json")
    assert json.loads(out)["missing"] == []

    code, out, _ = insite("export", run_dir, "--manifest", manifest, "--out", out_dir, "--keys", keys, "--json")
    assert code == 0 and json.loads(out)["ok"] is True
    assert (out_dir / "assets" / "code" / "bundle_configs.py").is_file()

    code, out, _ = insite("verify", out_dir, "--keys", keys)
    assert code == 0 and "FAIL" not in out

    (out_dir / "bundle" / "LICENSE").write_text("anything goes\n")
    code, out, _ = insite("verify", out_dir, "--json")
    report = json.loads(out)
    assert code == 1 and report["ok"] is False
    assert [(c["name"], c["detail"]) for c in report["checks"] if not c["ok"]] == [
        ("checksums", "bundle/LICENSE: SHA-256 mismatch (file was modified)"),
        (
            "bundle files",
            "LICENSE: not what the approved manifest, run record and checkpoint produce (edited after export)",
        ),
    ]


def test_bad_manifest_is_one_line_exit_2(tmp_path, insite):
    manifest = tmp_path / "m.toml"
    manifest.write_text('schema = "insite-manifest/1"\nsurprise = 1\n')
    code, _, err = insite("manifest", "explain", manifest)
    assert code == 2 and "unknown setting 'surprise'" in err and "Traceback" not in err
