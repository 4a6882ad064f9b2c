"""Real Ed25519 keys on disk and real signatures over the manifest digest."""

from __future__ import annotations

import os
import stat

import pytest

from common.errors import ManifestError, ProvisioningError
from common.keys import load_private_key, load_public_key
from deploy.node_keys import create_site_key
from publication.manifest.approvals import (
    ApprovalSet,
    approve_manifest,
    check_approvals,
    collect,
    load_approval,
    manifest_digest,
    write_model,
)
from publication.signing import create_key, load_public_keys


@pytest.fixture
def keys(tmp_path):
    """Three sites' keys, each in its own folder, public halves gathered by the coordinator."""
    public = tmp_path / "consortium"
    public.mkdir()
    private = {}
    for site in ("site-a", "site-b", "site-c"):
        key = tmp_path / site / "approval.key"
        (public / f"{site}.pub").write_bytes(create_key(key).read_bytes())
        private[site] = load_private_key(key)
    return private, load_public_keys(public)


def test_private_key_created_0600_and_never_overwritten(tmp_path):
    key = tmp_path / "k" / "site.key"
    public = create_key(key)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert load_public_key(public)
    with pytest.raises(ProvisioningError, match="already exists"):
        create_key(key)


def test_key_readable_by_others_is_refused(tmp_path):
    key = tmp_path / "site.key"
    create_key(key)
    os.chmod(key, 0o644)
    with pytest.raises(ProvisioningError, match="readable by others"):
        load_private_key(key)


def test_valid_approvals_from_every_site(keys):
    private, public = keys
    raw = b"schema = 'insite-manifest/1'\n"
    approvals = [approve_manifest(site, raw, key) for site, key in private.items()]
    check = check_approvals(approvals, manifest_digest(raw), public)
    assert check.valid == ("site-a", "site-b", "site-c") and not check.rejected


def test_any_changed_byte_voids_every_approval(keys):
    private, public = keys
    raw = b"schema = 'insite-manifest/1'\n# comment\n"
    approvals = [approve_manifest(site, raw, key) for site, key in private.items()]
    changed = raw.replace(b"comment", b"c0mment")
    check = check_approvals(approvals, manifest_digest(changed), public)
    assert check.valid == ()
    assert all("another version of the manifest" in reason for reason in check.rejected.values())


def test_signature_cannot_be_relabelled_as_another_site(keys):
    private, public = keys
    raw = b"x"
    forged = approve_manifest("site-a", raw, private["site-a"]).model_copy(update={"site": "site-b"})
    check = check_approvals([forged], manifest_digest(raw), public)
    assert check.rejected == {"site-b": "signature by 'site-b' does not verify with its consortium key"}


def test_unknown_site_and_collection(keys, tmp_path):
    private, public = keys
    raw = b"y"
    outsider = approve_manifest("site-z", raw, private["site-a"])
    kept, check = collect([approve_manifest("site-a", raw, private["site-a"]), outsider], manifest_digest(raw), public)
    assert [a.site for a in kept.approvals] == ["site-a"]
    assert "no public key for site 'site-z'" in check.rejected["site-z"]
    write_model(tmp_path / "a.json", kept.approvals[0])
    assert load_approval(tmp_path / "a.json") == kept.approvals[0]
    assert isinstance(kept, ApprovalSet)


def test_malformed_approval_file_is_named(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"site": "site-a"}')
    with pytest.raises(ManifestError, match=r"bad.json: 'manifest_sha256': Field required"):
        load_approval(path)


def test_provisioned_ecdsa_site_keys_sign_approvals(tmp_path):
    """The security issue's node keys (ECDSA P-384, OpenSSH) sign approvals where they exist."""
    consortium = tmp_path / "consortium" / "sites"
    private = {}
    for site in ("site-a", "site-b"):
        key = tmp_path / site / "keys" / "node.key"
        create_site_key(key, consortium / f"{site}.pub")
        private[site] = load_private_key(key)
    public = load_public_keys(consortium)
    raw = b"schema = 'insite-manifest/1'\n"
    approvals = [approve_manifest(site, raw, key) for site, key in private.items()]
    assert check_approvals(approvals, manifest_digest(raw), public).valid == ("site-a", "site-b")
    swapped = {"site-a": public["site-b"], "site-b": public["site-a"]}
    assert check_approvals(approvals, manifest_digest(raw), swapped).valid == ()
