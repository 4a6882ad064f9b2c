"""Only the coordinator can submit runs: sites reach the SuperLink through a Fleet-only TLS proxy.

One SuperLink + proxy for the whole module (node attempts run side by side): the public address
refuses the Control API (the real ``flwr`` CLI), the Runtime API and everything else with the
proxy's own 403; unregistered, foreign-key, foreign-CA and plaintext SuperNodes are refused, while
the registered site joins through the same address. Each check fails if the proxy forwarded
everything, or if TLS or node authentication were off.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from deploy.coordinator.app_bundle import stage_app
from deploy.coordinator.pki import ConsortiumFiles, create_ca
from deploy.coordinator.proxy import (
    FLEET_PREFIX,
    FLEET_ROUTES,
    INSTALL_HINT,
    nginx_path,
)
from deploy.coordinator.superlink import SuperLink
from deploy.demo.workspace import Workspace, provision_demo, start_demo_site
from deploy.host.flower import CONNECTION, flower_tool, write_connection
from deploy.host.processes import ProcessSet, free_port
from deploy.node_keys import create_site_key

pytestmark = [
    pytest.mark.federation,
    pytest.mark.timeout(600),
    pytest.mark.skipif(nginx_path() is None, reason=f"nginx not installed; {INSTALL_HINT}"),
]

SITE = "site-a"
NODE_WAIT_S = 90


def test_fleet_routes_are_those_the_installed_flower_uses():
    """The allow-list must match what a SuperNode calls and what the SuperLink serves under Fleet."""
    from flwr.superlink.routers.fleet.router import router
    from flwr.supernode.fleet_http_client import FleetHttpClient

    called: list[str] = []
    client = FleetHttpClient.__new__(FleetHttpClient)
    client._unary_unary = lambda *, path, **_: called.append(path)  # type: ignore[method-assign]
    for name in dir(FleetHttpClient):
        if name[0].isupper():
            getattr(client, name)(None)
    expected = {FLEET_PREFIX + route for route in FLEET_ROUTES}
    assert set(called) == expected
    assert {route.path for route in router.routes} == expected


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory):
    """A provisioned consortium with one registered site; SuperLink behind the proxy."""
    root = tmp_path_factory.mktemp("proxy")
    space = Workspace(root)
    provision_demo(space, [SITE])
    with ProcessSet(space.logs, {}) as processes:
        fed = SuperLink(space.root, space.consortium, processes)
        fed.start()
        fed.register_key(SITE, space.site(SITE, 1).public_key)
        yield space, fed


def _nodes(fed: SuperLink) -> list[dict]:
    """Nodes as the coordinator sees them through its private Control address."""
    return json.loads(fed.flwr("supernode", "list", CONNECTION, "--format", "json"))["nodes"]


@pytest.fixture(scope="module")
def node_attempts(coordinator):
    """Start the registered site and four intruders at the public address at once.

    Returns whether the site came online, each intruder's exit code and log once all have
    exited, and how many nodes the coordinator then knows.
    """
    space, fed = coordinator
    root = space.root
    create_site_key(root / "foreign" / "node.key", root / "foreign" / "node.pub")
    other = ConsortiumFiles(root / "other-consortium")
    other.root.mkdir()
    create_ca(other)
    ca = str(space.consortium.ca_cert)
    site_key = str(space.site(SITE, 1).private_key)
    intruders = {
        "unregistered": ["--root-certificates", ca],
        "foreign-key": ["--root-certificates", ca, "--auth-supernode-private-key", str(root / "foreign" / "node.key")],
        "foreign-ca": ["--root-certificates", str(other.ca_cert), "--auth-supernode-private-key", site_key],
        "plaintext": ["--insecure"],
    }
    start_demo_site(fed, space.site(SITE, 1), space.root)
    started = {
        name: fed.processes.start(
            f"intruder-{name}",
            [
                flower_tool("flower-supernode"),
                "--superlink",
                fed.address,
                *args,
                "--node-config",
                'data-path="/nonexistent"',
                "--port",
                str(free_port()),
            ],
        )
        for name, args in intruders.items()
    }
    deadline = time.monotonic() + NODE_WAIT_S
    online = False
    while time.monotonic() < deadline:
        online = online or any(node["status"] == "online" for node in _nodes(fed))
        if online and all(p.popen.poll() is not None for p in started.values()):
            break
        time.sleep(1)
    attempts = {name: (p.popen.poll(), p.log_path.read_text(errors="replace")) for name, p in started.items()}
    return online, attempts, len(_nodes(fed))


def test_registered_site_joins_through_the_proxy(node_attempts):
    online, _, known = node_attempts
    assert online, "the registered site never came online through the proxy"
    assert known == 1  # and no intruder became a node


@pytest.mark.parametrize(
    "intruder, reason",
    [
        ("unregistered", "must be registered"),
        ("foreign-key", "Failed to activate SuperNode"),
        ("foreign-ca", "CERTIFICATE_VERIFY_FAILED"),
        ("plaintext", "'400 Bad Request' for url 'http://"),  # nginx: plain HTTP to the TLS port
    ],
)
def test_intruding_node_is_refused(node_attempts, intruder, reason):
    code, log = node_attempts[1][intruder]
    assert code not in (None, 0), f"{intruder} SuperNode was not refused:\n{log[-1500:]}"
    assert reason in log, log[-1500:]


def _public_flwr(space: Workspace, fed: SuperLink, *args: str) -> subprocess.CompletedProcess:
    """The real ``flwr`` CLI with its connection pointing at the public (proxy) address."""
    home = space.root / "public-flwr-home"
    write_connection(home, fed.address, space.consortium.ca_cert)
    return subprocess.run(
        [flower_tool("flwr"), *args],
        env={**fed.env, "FLWR_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def _register_intruder(space: Workspace) -> list[str]:
    key = space.root / "intruder" / "node.pub"
    create_site_key(key.with_suffix(".key"), key)
    return ["supernode", "register", str(key), CONNECTION, "--name", "intruder"]


def _runs(fed: SuperLink) -> list[dict]:
    return json.loads(fed.flwr("list", CONNECTION, "--format", "json"))["runs"]


@pytest.mark.parametrize(
    "command, unchanged",
    [
        (lambda space: ["ls", CONNECTION], None),  # refused, or it would have listed
        (_register_intruder, lambda fed: len(_nodes(fed)) == 1),
        (lambda space: ["run", str(stage_app(space.root / "intruder-app")), CONNECTION], lambda fed: _runs(fed) == []),
    ],
    ids=["list runs", "register node", "submit run"],
)
def test_control_api_is_refused_at_the_public_address(coordinator, command, unchanged):
    space, fed = coordinator
    done = _public_flwr(space, fed, *command(space))
    output = done.stdout + done.stderr
    assert done.returncode != 0 and "403 Forbidden" in output, output[-1500:]
    assert unchanged is None or unchanged(fed)


def _https(fed: SuperLink, ca: Path, method: str, path: str) -> tuple[int, bytes]:
    context = ssl.create_default_context(cafile=str(ca))
    connection = http.client.HTTPSConnection(fed.host, fed.port, context=context, timeout=10)
    try:
        connection.request(
            method, path, body=b"" if method == "POST" else None, headers={"Content-Type": "application/protobuf"}
        )
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize(
    "method, path",
    [
        ("POST", "/v1/runtime/get-nodes"),
        ("POST", "/v1/runtime/create-task"),
        ("POST", "/v1/control/start-run"),
        ("POST", "/v1/fleet/../control/list-runs"),
        ("POST", "/v1/fleet/%2e%2e/control/list-runs"),
        ("POST", "/v1/fleet/pull-messages/extra"),
        ("GET", "/v1/fleet/pull-messages"),
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
        ("GET", "/health"),
    ],
)
def test_everything_but_fleet_is_refused_by_the_proxy_itself(coordinator, method, path):
    space, fed = coordinator
    status, body = _https(fed, space.consortium.ca_cert, method, path)
    assert status == 403 and b"<center>nginx</center>" in body, (status, body[:300])


def test_fleet_route_reaches_the_superlink(coordinator):
    """Positive control: an allowed route is answered by the SuperLink, not by nginx's 403."""
    space, fed = coordinator
    status, body = _https(fed, space.consortium.ca_cert, "POST", "/v1/fleet/get-run")
    assert status != 403 and b"nginx" not in body, (status, body[:300])


def test_plaintext_http_is_refused(coordinator):
    _, fed = coordinator
    with socket.create_connection((fed.host, fed.port), timeout=10) as raw:
        raw.sendall(b"POST /v1/fleet/register-node HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        reply = raw.recv(4096)
    assert reply.startswith(b"HTTP/1.1 400") and b"plain HTTP request was sent to HTTPS port" in reply
