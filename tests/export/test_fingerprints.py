"""One fingerprint for a site's key, wherever insite shows it: what ``ssh-keygen -lf`` prints."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from deploy.demo.publish import demo_publish
from deploy.host.processes import free_port

SITES = ("site-a", "site-b", "site-c")
FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")


def ssh_keygen_fingerprint(public_key) -> str:
    done = subprocess.run(["ssh-keygen", "-lf", str(public_key)], capture_output=True, text=True, check=True)
    return FINGERPRINT.search(done.stdout).group(0)


@pytest.mark.skipif(
    shutil.which("ssh-keygen") is None,
    reason="needs OpenSSH's ssh-keygen (Debian openssh-client, installed by `make system-deps`)",
)
def test_keygen_register_sites_approval_card_and_verify_show_one_fingerprint(run_dir, tmp_path, insite):
    config = tmp_path / "consortium.toml"
    config.write_text(f'[consortium]\naddress = "127.0.0.1:{free_port()}"\nlisten = "127.0.0.1"\n')
    consortium = tmp_path / "consortium"
    assert insite("coord", "provision", "--config", config, "--dir", consortium).code == 0
    expected, keys = {}, {}
    for site in SITES:
        keys[site] = tmp_path / site / "keys" / "node.key"
        made = insite("site", "keygen", "--dir", keys[site].parent)
        expected[site] = ssh_keygen_fingerprint(keys[site].with_suffix(".pub"))
        assert f"fingerprint: {expected[site]}" in made.out
        registered = insite("coord", "register-site", site, keys[site].with_suffix(".pub"), "--dir", consortium)
        assert registered.code == 0 and expected[site] in registered.out
    listed = json.loads(insite("coord", "sites", "--json", "--dir", consortium).out)
    assert {entry["name"]: entry["fingerprint"] for entry in listed} == expected

    result = demo_publish(run_dir, keys, tmp_path / "publish", consortium_keys=consortium / "sites")
    assert result.published, result.summary()
    for site in SITES:
        approval = json.loads((tmp_path / "publish" / "approvals" / f"{site}.json").read_text())
        assert approval["key_fingerprint"] == expected[site]
    card = (result.bundle / "docs" / "README.md").read_text()
    assert all(f"- {site}: key {expected[site]}" in card for site in SITES)
    verified = insite("verify", result.export, "--keys", consortium / "sites", "--json")
    detail = next(check["detail"] for check in json.loads(verified.out)["checks"] if check["name"] == "approvals")
    assert all(f"{site} {expected[site]}" in detail for site in SITES)
