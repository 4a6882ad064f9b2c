"""Shared pieces of the operator-CLI tests: a consortium on loopback, sites made as an administrator would."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from deploy.demo.synthetic_sites import DEMO_SITES, write_site
from deploy.host.processes import free_port


@pytest.fixture()
def consortium_config(tmp_path):
    """Writes a consortium.toml on loopback: sites use 127.0.0.1 and a free port."""

    def write(name: str = "consortium.toml", extra: str = "", port: int | None = None) -> Path:
        path = tmp_path / name
        path.write_text(
            f'[consortium]\nname = "Test consortium"\naddress = "127.0.0.1:{port or free_port()}"\n'
            f'hostnames = ["coordinator.test"]\nlisten = "127.0.0.1"\n'
            f"certificate_days = 90\n{extra}"
        )
        return path

    return write


@pytest.fixture()
def consortium(tmp_path, insite, consortium_config) -> Path:
    """A provisioned consortium folder."""
    folder = tmp_path / "consortium"
    done = insite("coord", "provision", "--config", consortium_config(), "--dir", folder)
    assert done.code == 0, done.err
    return folder


@pytest.fixture()
def site_folder(tmp_path, insite, consortium):
    """Makes a site as its administrator would: the coordinator's kit, a key, cases in data/.

    Returns the folder (its site.toml is ready for 'insite site join'); the site is registered.
    """

    def make(name: str, cases: tuple[int, int] = (1, 1), register: bool = True) -> Path:
        folder = tmp_path / name
        assert insite("coord", "kit", name, "--out", folder, "--dir", consortium).code == 0
        assert insite("site", "keygen", "--dir", folder / "keys").code == 0
        if register:
            assert insite("coord", "register-site", name, folder / "keys" / "node.pub", "--dir", consortium).code == 0
        profile = next(p for p in DEMO_SITES if p.name == name)
        write_site(profile, folder / "data", *cases, size=32)
        set_setting(folder / "site.toml", "node_port", str(free_port()))
        return folder

    return make


@pytest.fixture()
def edit_setting():
    """Changes one ``key = value`` line of a TOML file, the way an administrator edits it."""
    return set_setting


def set_setting(path: Path, key: str, value: str) -> None:
    text, found = re.subn(rf"^{key} = [^#\n]*", f"{key} = {value} ", path.read_text(), flags=re.M)
    assert found == 1, f"{key} not in {path}"
    path.write_text(text)
