"""The dashboard's JSON API: its contents against the run record, read-only, and the token rule."""

from __future__ import annotations

import os
import socket
import stat
import time

import httpx
import pytest
from starlette.testclient import TestClient

from common.errors import ProvisioningError
from common.run_record import RunRecord
from deploy.coordinator.dashboard.app import COOKIE, ENDPOINTS, create_app
from deploy.coordinator.dashboard.server import DashboardServer, available_port, binding_for
from deploy.coordinator.dashboard.source import DashboardSource
from deploy.coordinator.run_state import describe_run


@pytest.fixture()
def client(consortium):
    return TestClient(create_app(consortium))


def test_current_run_is_the_run_record(client, consortium):
    (run_dir,) = consortium.run_dirs()
    record = RunRecord(run_dir)
    rows = record.rounds()
    body = client.get("/api/current").json()
    assert body == client.get(f"/api/runs/{run_dir.name}").json()
    assert body["record"] == record.read()
    assert body["state"] == describe_run(record.read(), record.state(), time.time()) == "completed (2 of 2 rounds done)"
    assert [r["round"] for r in body["rounds"]] == [row["round"] for row in rows] == [1, 2]
    for shown, row in zip(body["rounds"], rows, strict=True):
        assert shown["global_dice"] == row["global_dice"]
        assert shown["site_dice"] == {site: metrics["dice"] for site, metrics in row["sites"].items()}
        assert shown["failures"] == row["failures"] and shown["round_s"] == row["wall_s"]
        assert shown["longest_training_s"] == max(m["train_seconds"] for m in row["sites"].values())
    assert body["now"]["phase"] == "completed"
    # No SuperLink database here: the Flower run's app and traffic are unknown, not invented.
    assert [f["app_digest"] for f in body["flower_runs"]] == ["unknown"] * len(record.read()["flower_runs"])


def test_history_and_sites_say_what_the_coordinator_knows(client, consortium):
    (run_dir,) = consortium.run_dirs()
    record = RunRecord(run_dir).read()
    (run,) = client.get("/api/runs").json()["runs"]
    assert (run["name"], run["status"], run["rounds_done"], run["sites"]) == (
        run_dir.name,
        "completed",
        2,
        record["sites"],
    )
    assert run["final_global_dice"] == RunRecord(run_dir).rounds()[-1]["global_dice"]
    assert run["evaluations"] == []
    sites = client.get("/api/sites").json()
    assert sites["superlink_seen"] is False
    assert [s["name"] for s in sites["sites"]] == ["site-a", "site-b"]
    for site in sites["sites"]:
        assert site["key_fingerprint"].startswith("SHA256:") and site["registered"]
        assert (site["online"], site["flower_status"], site["last_seen"]) == (False, "never connected", None)
        assert site["approved_app"] == site["supernode_version"] == "unknown"


def test_publication_shows_each_decision_and_who_approved(client, consortium):
    (manifest,) = client.get("/api/publication").json()["manifests"]
    assert [(a["kind"], a["decision"]) for a in manifest["assets"]] == [
        ("architecture", "may publish"),
        ("weights", "may publish"),
    ]
    assert manifest["approved_by"] == ["site-a", "site-b"] and manifest["awaiting"] == []
    # A manifest changed after the approvals voids them, and the page says who is awaited again.
    path = consortium.manifests[0]
    original = path.read_bytes()
    try:
        path.write_bytes(original + b"\n# edited\n")
        (edited,) = client.get("/api/publication").json()["manifests"]
        assert edited["approved_by"] == [] and edited["awaiting"] == ["site-a", "site-b"]
        assert "another version of the manifest" in edited["rejected"]["site-a"]
    finally:
        path.write_bytes(original)


@pytest.mark.parametrize("path", ["/", *[p.replace("{name}", "20261128-120000") for p in ENDPOINTS]])
def test_nothing_can_be_changed_through_it(client, path):
    assert client.get(path).status_code == 200
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        assert client.request(method, path).status_code == 405, (method, path)
    assert client.post("/static/dashboard.js").status_code == 405


def test_unknown_run_is_404(client):
    assert client.get("/api/runs/nonexistent").status_code == 404


def _own_address() -> str | None:
    """This machine's address on its network (not loopback), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent, the kernel picks the interface
            return str(probe.getsockname()[0])
        except OSError:
            return None


def test_beyond_loopback_it_needs_tls_and_the_token(consortium):
    """Bound to 0.0.0.0: HTTPS with the consortium's certificate; 401 without the token."""
    binding = binding_for(consortium, "0.0.0.0", available_port("0.0.0.0"))
    assert binding.certificate == consortium.pki.server_cert and binding.token
    assert stat.S_IMODE(os.stat(consortium.token_path).st_mode) == 0o600
    assert binding_for(consortium, "0.0.0.0", 1).token == binding.token  # the same token until it is deleted
    base = f"https://127.0.0.1:{binding.port}"
    with (
        DashboardServer(consortium, binding),
        httpx.Client(verify=str(consortium.pki.ca_cert), follow_redirects=True) as http,
    ):
        for path in ("/", "/api/sites", "/api/current", "/static/dashboard.js"):
            assert http.get(base + path).status_code == 401, path
        assert http.get(base + "/api/sites", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert http.get(base + "/api/sites?token=wrong").status_code == 401
        good = http.get(base + "/api/sites", headers={"Authorization": f"Bearer {binding.token}"})
        assert good.status_code == 200 and len(good.json()["sites"]) == 2
        login = http.get(f"{base}/?token={binding.token}")  # follows the redirect that drops the token
        assert login.status_code == 200 and "token" not in str(login.url)
        cookie = login.history[0].headers["set-cookie"]
        assert f"{COOKIE}=" in cookie and "HttpOnly" in cookie and "Secure" in cookie
        assert http.get(base + "/api/sites").status_code == 200  # the page's own calls carry the cookie
        own = _own_address()
        if own is not None:  # from the network side as well, where the server sees a remote peer
            assert httpx.get(f"https://{own}:{binding.port}/api/sites", verify=False).status_code == 401
        with pytest.raises(httpx.TransportError):  # no plain HTTP beside it
            httpx.get(f"http://127.0.0.1:{binding.port}/api/sites")


def test_loopback_needs_no_token_and_no_certificate(consortium, tmp_path):
    bare = DashboardSource("bare", consortium.pki.__class__(tmp_path), tmp_path / "state.db", tmp_path / "runs")
    binding = binding_for(bare, "127.0.0.1", available_port("127.0.0.1"))
    assert binding.token is None and binding.url.startswith("http://127.0.0.1:")
    with DashboardServer(bare, binding):
        body = httpx.get(binding.url + "api/runs").json()
    assert body == {"runs": []}
    with pytest.raises(ProvisioningError, match="certificate"):
        binding_for(bare, "0.0.0.0", 8471)
