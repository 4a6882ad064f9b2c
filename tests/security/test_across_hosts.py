"""Across hosts: coordinator and sites in their own network namespaces, joined by veth links.

The coordinator's namespace holds the SuperLink (its loopback only) and the Fleet-only proxy on
its link addresses; each site's namespace holds its SuperNode, which reaches the coordinator by a
real hostname (``coordinator.insite.test``, resolved through ``/etc/netns/<ns>/hosts``) that the
coordinator's TLS certificate names. A federated round must complete across the namespaces with
both sites' metrics. From a site's namespace, the SuperLink's own port is unreachable (a check
that fails if the SuperLink listened beyond loopback; the proxy's port on the same address
connects, so the probe itself works) and a run submitted with the real ``flwr`` CLI through the
public name is refused (it fails if the proxy forwarded the Control API: the run would appear).

Needs root (namespaces, veth links) and nginx; skipped otherwise with the reason.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from common.run_record import RunRecord
from common.settings import RunSettings
from deploy.coordinator.app_bundle import stage_app
from deploy.coordinator.pki import issue_server_certificate
from deploy.coordinator.proxy import INSTALL_HINT, nginx_path
from deploy.coordinator.run_supervisor import RunSupervisor
from deploy.coordinator.superlink import SuperLink
from deploy.demo.synthetic_sites import DEMO_SITES, write_site
from deploy.demo.workspace import DemoSite, Workspace, provision_demo
from deploy.host.flower import CONNECTION, flower_env, flower_tool, write_connection
from deploy.host.processes import ManagedProcess, ProcessSet, RestartPolicy
from deploy.site.app_approval import approve_app, fab_digest
from deploy.site.supernode import start_supernode

HOSTNAME = "coordinator.insite.test"
CLONE_NEWNET = 0x40000000
SITES = ("site-a", "site-b", "site-c")
SETTINGS = {
    "rounds": 1,
    "min_sites": 2,
    "round_timeout_s": 300,
    "training": {"local_steps": 2, "patch_size": 16, "batch_size": 1},
    "model": {"channels": [4, 8, 16], "strides": [2, 2]},
    "aggregation": {"mode": "secagg+", "max_weight": 8},
}


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "creating network namespaces and veth links needs root"
    if shutil.which("ip") is None:
        return "iproute2 ('ip') is not installed"
    if nginx_path() is None:
        return f"nginx not installed; {INSTALL_HINT}"
    return None


pytestmark = [
    pytest.mark.federation,
    pytest.mark.timeout(900),
    pytest.mark.skipif(_why_not() is not None, reason=_why_not() or ""),
]


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@contextmanager
def inside(namespace: str) -> Iterator[None]:
    """Run this thread (and the processes it starts) in ``namespace``; switch back afterwards."""
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{namespace}", os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {namespace}")
        yield
    finally:
        libc.setns(own, CLONE_NEWNET)
        os.close(own)
        os.close(target)


class SiteProcesses(ProcessSet):
    """A site's processes, started in the site's namespace (with its /etc/netns hosts file)."""

    def __init__(self, namespace: str, log_dir: Path, env: dict[str, str]) -> None:
        super().__init__(log_dir, env)
        self.namespace = namespace

    def start(
        self,
        name: str,
        argv: list[str],
        extra_env: dict[str, str] | None = None,
        restart: RestartPolicy | None = None,
    ) -> ManagedProcess:
        return super().start(name, ["ip", "netns", "exec", self.namespace, *argv], extra_env, restart)


@pytest.fixture(scope="module")
def network():
    """Namespaces coordinator + one per site, a veth link each, hosts files; removed afterwards."""
    tag = f"ins{os.getpid() % 100000}"
    coordinator = f"{tag}-coord"
    names = {site: f"{tag}-{site[-1]}" for site in SITES}
    created: list[str] = []
    try:
        for namespace in (coordinator, *names.values()):
            _ip("netns", "add", namespace)
            created.append(namespace)
            _ip("-n", namespace, "link", "set", "lo", "up")
        addresses, links = {}, {}
        for number, (site, namespace) in enumerate(names.items(), start=1):
            near, far = f"{tag}{site[-1]}c", f"{tag}{site[-1]}s"
            _ip("link", "add", near, "netns", coordinator, "type", "veth", "peer", "name", far, "netns", namespace)
            coord_ip, site_ip = f"10.231.{number}.1", f"10.231.{number}.2"
            _ip("-n", coordinator, "addr", "add", f"{coord_ip}/24", "dev", near)
            _ip("-n", namespace, "addr", "add", f"{site_ip}/24", "dev", far)
            _ip("-n", coordinator, "link", "set", near, "up")
            _ip("-n", namespace, "link", "set", far, "up")
            hosts = Path("/etc/netns") / namespace / "hosts"
            hosts.parent.mkdir(parents=True, exist_ok=True)
            hosts.write_text(f"127.0.0.1 localhost\n{coord_ip} {HOSTNAME}\n")
            addresses[site] = coord_ip
            links[site] = (near, far)
        yield coordinator, names, addresses, links
    finally:
        for namespace in created:
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
            shutil.rmtree(Path("/etc/netns") / namespace, ignore_errors=True)


@pytest.fixture(scope="module")
def federation(network, tmp_path_factory):
    """Coordinator in its namespace, each site's SuperNode in its own; yields once all are up."""
    coordinator, namespaces, _, _ = network
    root = tmp_path_factory.mktemp("across-hosts")
    space = Workspace(root)
    for profile in DEMO_SITES[: len(SITES)]:
        write_site(profile, space.site_dir(profile.name) / "data", 2, 1, size=32)
    provision_demo(space, list(SITES))
    # localhost first: the proxy checks the SuperLink on its loopback hop by the first DNS name.
    issue_server_certificate(space.consortium, ["localhost", HOSTNAME, "127.0.0.1"])
    with ProcessSet(space.logs, {}) as processes, inside(coordinator):
        fed = SuperLink(space.root, space.consortium, processes, host="0.0.0.0")
        fed.start()
        sites = []
        for name in SITES:
            site: DemoSite = space.site(name, 1)
            fed.register_key(name, site.public_key)
            approve_app(site.context.cache_path, fab_digest(fed.project_app), "across-hosts test")
            site_processes = SiteProcesses(namespaces[name], space.logs, flower_env(space.site_dir(name) / "flwr-home"))
            start_supernode(
                site_processes,
                f"{HOSTNAME}:{fed.port}",
                space.consortium.ca_cert,
                site.private_key,
                site.context,
                9094,
                space.site_dir(name) / "gate",
            )
            sites.append(site_processes)
        try:
            yield space, fed, network, sites
        finally:
            for site_processes in sites:
                site_processes.stop_all()


def test_a_round_runs_across_namespaces_by_hostname(federation):
    space, fed, _, _ = federation
    settings = RunSettings.model_validate(SETTINGS)
    run_dir = space.root / "run"
    RunRecord(run_dir).create("across-hosts", settings, transport={"tls": True})
    with inside(federation[2][0]):
        record = RunSupervisor(fed, run_dir, lambda row: None, lambda event: None, 600).run()
    assert record["status"] == "completed" and record["aggregation"] == "secagg+"
    [row] = RunRecord(run_dir).rounds()
    assert set(row["sites"]) == set(SITES)


def _connects(namespace: str, host: str, port: int) -> bool:
    with inside(namespace):
        try:
            socket.create_connection((host, port), timeout=3).close()
        except OSError:
            return False
        return True


def test_sites_cannot_reach_the_control_api(federation):
    space, fed, (coordinator, namespaces, addresses, _), _ = federation
    for site, namespace in namespaces.items():
        assert _connects(namespace, addresses[site], fed.port), "the probe cannot reach the proxy"
        assert not _connects(namespace, addresses[site], fed.private_port), f"{site} reaches the SuperLink's own port"
    runs_before = _run_ids(fed)
    home = space.root / "site-flwr-home"
    write_connection(home, f"{HOSTNAME}:{fed.port}", space.consortium.ca_cert)
    app = stage_app(space.root / "intruder-app")
    done = subprocess.run(
        ["ip", "netns", "exec", namespaces["site-a"], flower_tool("flwr"), "run", str(app), CONNECTION],
        env={**fed.env, "FLWR_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0 and "403 Forbidden" in output, output[-1500:]
    assert _run_ids(fed) == runs_before  # no run submitted (a run of the fixture may have moved on meanwhile)


def _run_ids(fed: SuperLink) -> set[str]:
    return {str(run["run-id"]) for run in json.loads(fed.flwr("list", CONNECTION, "--format", "json"))["runs"]}


def _drop_all(namespace: str, link: str, drop: bool) -> None:
    """Every packet leaving ``link`` is dropped (a queue that holds none), or traffic flows again.

    ``netem`` and tc's drop action are not in every kernel; a pfifo of length 0 is.
    """
    verb = (
        ["qdisc", "replace", "dev", link, "root", "pfifo", "limit", "0"]
        if drop
        else ["qdisc", "del", "dev", link, "root"]
    )
    subprocess.run(["ip", "netns", "exec", namespace, "tc", *verb], check=True, capture_output=True)


@pytest.mark.slow
def test_a_partitioned_site_is_dropped_and_takes_part_again_when_its_network_returns(federation):
    """Packet drops both ways on site-c's link in round 2; the link heals in round 3."""
    space, fed, (coordinator, namespaces, _, links), site_sets = federation
    settings = RunSettings.model_validate(
        {**SETTINGS, "rounds": 4, "faults": {"straggler_grace_s": 20, "stage_timeout_s": 90, "quorum_wait_s": 120}}
    )
    run_dir = space.root / "partition-run"
    record = RunRecord(run_dir)
    record.create("partition", settings, transport={"tls": True})
    near, far = links["site-c"]
    events: list[str] = []
    stop = threading.Event()

    def partition() -> None:
        cut = healed = False
        while not stop.wait(0.2):
            for site_processes in site_sets:
                events.extend(site_processes.supervise())
            state = record.state() or {}
            if not cut and state.get("round") == 2 and state.get("stage") == "masked-update":
                _drop_all(coordinator, near, True)
                _drop_all(namespaces["site-c"], far, True)
                cut = True
                events.append("partitioned site-c")
            elif cut and not healed and int(state.get("round") or 0) >= 3:
                _drop_all(coordinator, near, False)
                _drop_all(namespaces["site-c"], far, False)
                healed = True
                events.append("healed site-c")

    watcher = threading.Thread(target=partition, daemon=True)
    watcher.start()
    try:
        with inside(coordinator):
            final = RunSupervisor(fed, run_dir, lambda row: None, events.append, 1500).run()
    finally:
        stop.set()
        watcher.join()
        for namespace, link in ((coordinator, near), (namespaces["site-c"], far)):
            subprocess.run(
                ["ip", "netns", "exec", namespace, "tc", "qdisc", "del", "dev", link, "root"], capture_output=True
            )
    assert "partitioned site-c" in events and "healed site-c" in events
    assert final["status"] == "completed"
    rows = record.rounds()
    assert [row["round"] for row in rows] == [1, 2, 3, 4]
    assert "site-c" in rows[1]["dropped"]
    trained_later = [{s for s, m in row["sites"].items() if "num_train" in m} for row in rows[2:]]
    assert any("site-c" in sites for sites in trained_later), trained_later
