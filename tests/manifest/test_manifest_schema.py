"""The manifest TOML is validated once, with messages that name the field and the reason."""

from __future__ import annotations

import tomllib

import pytest
import tomli_w

from common.errors import ManifestError
from publication.manifest.schema import load_manifest, load_template


def rewrite(path, change):
    document = tomllib.loads(path.read_text())
    change(document)
    path.write_text(tomli_w.dumps(document))
    return path


def test_valid_manifest_parses_and_resolves_asset_paths(write_manifest):
    loaded = load_manifest(write_manifest(kinds=("architecture", "code", "weights")))
    assert [a.kind for a in loaded.manifest.assets] == ["architecture", "code", "weights"]
    weights = loaded.manifest.asset("weights")
    assert loaded.resolve(weights.files[0]).read_bytes() == b"weights bytes\n"
    assert loaded.raw == loaded.path.read_bytes()


def test_unknown_field_is_named(write_manifest):
    path = rewrite(write_manifest(), lambda d: d["answers"].update(comercialise=True))
    with pytest.raises(ManifestError, match=r"unknown setting 'answers.comercialise'"):
        load_manifest(path)


def test_invalid_value_names_field_and_reason(write_manifest):
    path = rewrite(write_manifest(), lambda d: d["assets"][0].update(access="everyone"))
    with pytest.raises(ManifestError, match=r"'assets.0.access'.*'public', 'dua' or 'consortium'"):
        load_manifest(path)


def test_assets_must_follow_seed_000_risk_order(write_manifest):
    path = rewrite(write_manifest(), lambda d: d["assets"].reverse())
    with pytest.raises(ManifestError, match="order of increasing risk"):
        load_manifest(path)


def test_each_kind_once(write_manifest):
    path = rewrite(write_manifest(), lambda d: d["assets"].insert(0, dict(d["assets"][0])))
    with pytest.raises(ManifestError, match="each asset kind may appear once"):
        load_manifest(path)


def test_code_needs_its_role(write_manifest):
    path = write_manifest(kinds=("code",), assets={"code": {"role": None}})
    with pytest.raises(ManifestError, match="'code' asset needs role"):
        load_manifest(path)


def test_bad_sha256_is_refused(write_manifest):
    path = rewrite(write_manifest(), lambda d: d["assets"][0]["files"][0].update(sha256="abc"))
    with pytest.raises(ManifestError, match=r"assets.0.files.0.sha256"):
        load_manifest(path)


def test_not_toml_and_missing_file(tmp_path):
    bad = tmp_path / "m.toml"
    bad.write_text("[project\n")
    with pytest.raises(ManifestError, match="not valid TOML"):
        load_manifest(bad)
    with pytest.raises(ManifestError, match="manifest not found"):
        load_manifest(tmp_path / "absent.toml")


def test_project_template_is_valid():
    template = load_template(__import__("pathlib").Path(__file__).parents[2] / "configs" / "manifest.toml")
    assert [a.kind for a in template.assets] == ["architecture", "environment", "code", "weights"]
