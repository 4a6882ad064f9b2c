"""The coordinator's commands on bad input: one line naming the problem, exit code 2, no traceback."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.local import Workspace, provision
from deploy.synthetic_sites import DEMO_SITES, write_site

INSITE = str(Path(sys.executable).parent / "insite")


def _insite(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([INSITE, *args], capture_output=True, text=True, timeout=120)


def _one_line_error(done: subprocess.CompletedProcess, *expected: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), done.stderr
    for text in expected:
        assert text in " ".join(done.stderr.split()), done.stderr


@pytest.fixture()
def workspace(tmp_path) -> Workspace:
    space = Workspace(tmp_path / "ws")
    write_site(DEMO_SITES[0], space.site_dir("site-a") / "data", 1, 1, size=32)
    done = _insite("coord", "provision", str(space.root))
    assert done.returncode == 0, done.stderr
    return space


def test_unknown_run_setting_is_named(workspace, tmp_path):
    config = tmp_path / "federation.toml"
    config.write_text("[run]\nrounds = 2\n[run.training]\nlocal_step = 5\n")
    _one_line_error(_insite("coord", "launch", str(workspace.root), "--config", str(config)),
                    "unknown setting 'training.local_step'", str(config))


def test_missing_certificate_is_named(workspace):
    workspace.consortium.server_cert.unlink()
    for _ in range(2):  # a launch that never started leaves nothing that blocks the next one
        _one_line_error(_insite("coord", "launch", str(workspace.root)),
                        str(workspace.consortium.server_cert), "SuperLink certificate not found")


def test_port_in_use_is_named(workspace):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        _one_line_error(_insite("coord", "launch", str(workspace.root), "--port", str(port)),
                        f"port {port} on 127.0.0.1 is already in use")


def test_resume_without_a_run_is_refused(workspace):
    _one_line_error(_insite("coord", "resume", str(workspace.root)), "run.json: not found")


def test_provision_keeps_keys_and_workspace_without_sites_is_named(workspace, tmp_path):
    key = workspace.site("site-a", 1).private_key
    before = key.read_bytes()
    assert _insite("coord", "provision", str(workspace.root)).returncode == 0
    assert key.read_bytes() == before and key.stat().st_mode & 0o777 == 0o600
    _one_line_error(_insite("coord", "provision", str(tmp_path / "empty")), "no sites/ folder")
