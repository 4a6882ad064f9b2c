"""A whole federation on this host: SuperLink, one SuperNode per site, and the run.

Everything is real Flower over TLS on loopback: the SuperLink serves with the consortium's
certificate and requires SuperNode authentication; each site is registered by its public key and
its SuperNode signs requests with its private key. By default the SuperLink listens on loopback
only and sites connect through the Fleet-only proxy (deploy/proxy.py), while the coordinator's
``flwr`` CLI uses the SuperLink's private address. Telemetry, update checks and runtime
dependency installation are off in every process (no network beyond loopback).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import tomli_w

from client.site import SiteContext
from common.errors import FederationError, LaunchError
from deploy.app_approval import approve, fab_digest
from deploy.clientapp_gate import install_gate
from deploy.pki import ConsortiumFiles, check_file
from deploy.processes import ManagedProcess, ProcessSet, free_port, require_port_free, wait_for_port
from deploy.proxy import LOOPBACK, ProxySpec, start_proxy
from deploy.supernode_launcher import poll_env

log = logging.getLogger(__name__)

APP_PACKAGES = ("common", "client", "server")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONNECTION = "insite"


def flower_env(flwr_home: Path) -> dict[str, str]:
    """Environment for every Flower process started here."""
    env = dict(os.environ)
    env.update({
        "FLWR_HOME": str(flwr_home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        # glibc would hand large freed blocks back to the OS after every training step
        # (measured: 9x more system time); keep them in the process instead.
        "MALLOC_MMAP_MAX_": "0",
        "MALLOC_TRIM_THRESHOLD_": "100000000000",
        "PYTHONWARNINGS": "ignore",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    })
    return env


def _tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


def stage_app(target: Path) -> Path:
    """Copy only the app's own code into ``target``: the FAB Flower ships to every site."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for package in APP_PACKAGES:
        shutil.copytree(PROJECT_ROOT / package, target / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(PROJECT_ROOT / "pyproject.toml", target / "pyproject.toml")
    (target / "README.md").write_text("insite federated app (staged by deploy/federation.py)\n")
    (target / ".gitignore").write_text("__pycache__/\n*.pyc\n")
    return target


@dataclass(frozen=True)
class SiteNode:
    """A site as the local launcher starts it: its context and its key pair's files."""

    context: SiteContext
    private_key: Path
    public_key: Path


def write_connection(flwr_home: Path, address: str, ca_cert: Path) -> None:
    """Make ``address`` the default ``flwr`` CLI connection (named ``insite``) under ``flwr_home``."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    config = {"superlink": {"default": CONNECTION, CONNECTION: {
        "address": address, "root-certificates": str(ca_cert)}}}
    (flwr_home / "config.toml").write_text(tomli_w.dumps(config))


def start_supernode(processes: ProcessSet, superlink: str, ca_cert: Path, private_key: Path,
                    context: SiteContext, port: int, gate_dir: Path) -> ManagedProcess:
    """A site's SuperNode behind its app-approval gate: the local launcher and 'insite site join'.

    ``port`` is the SuperNode's own ClientApp API port, bound to loopback only.
    """
    return processes.start(f"supernode-{context.name}", [
        sys.executable, "-m", "deploy.supernode_launcher",
        "--superlink", superlink,
        "--root-certificates", str(ca_cert),
        "--auth-supernode-private-key", str(private_key),
        "--node-config", context.to_node_config(),
        "--host", LOOPBACK, "--port", str(port),
    ], extra_env={**install_gate(gate_dir, processes.env["PATH"]), **poll_env()})


class LocalFederation:
    """Starts and watches the Flower processes of one federation on this host.

    ``host``/``port`` is the public address sites connect to. With ``proxy`` (the default) that
    is nginx, and the SuperLink itself listens on a private loopback port that only the
    coordinator's ``flwr`` CLI uses; without it, the SuperLink serves every API on the public
    address (as Flower does out of the box).
    """

    def __init__(self, workspace: Path, consortium: ConsortiumFiles, processes: ProcessSet,
                 host: str = "127.0.0.1", port: int | None = None, proxy: bool = True) -> None:
        self.workspace = workspace
        self.consortium = consortium
        self.processes = processes
        self.host = host
        self.port = port
        self.proxy = proxy
        self.superlink_port: int | None = None
        self.flwr_home = workspace / "flwr-home"
        self.env = flower_env(self.flwr_home)
        processes.env = self.env

    @property
    def address(self) -> str:
        """Where SuperNodes connect."""
        return f"{self.host}:{self.port}"

    @property
    def control_address(self) -> str:
        """Where the coordinator's ``flwr`` CLI connects (Control API)."""
        return f"{LOOPBACK}:{self.superlink_port}" if self.proxy else self.address

    def start_superlink(self, timeout: float = 60.0) -> None:
        """Start the SuperLink and, with ``proxy``, the public Fleet-only proxy in front of it."""
        for path, what in ((self.consortium.ca_cert, "consortium CA certificate"),
                           (self.consortium.server_cert, "SuperLink certificate"),
                           (self.consortium.server_key, "SuperLink private key")):
            check_file(path, what)
        if self.port is None:
            self.port = free_port(self.host)
        require_port_free(self.host, self.port)
        bind_host = LOOPBACK if self.proxy else self.host
        self.superlink_port = free_port(LOOPBACK) if self.proxy else self.port
        write_connection(self.flwr_home, self.control_address, self.consortium.ca_cert)
        superlink = self.processes.start("superlink", [
            _tool("flower-superlink"),
            "--ssl-ca-certfile", str(self.consortium.ca_cert),
            "--ssl-certfile", str(self.consortium.server_cert),
            "--ssl-keyfile", str(self.consortium.server_key),
            "--enable-supernode-auth",
            "--disable-runtime-dependency-installation",
            "--host", bind_host, "--port", str(self.superlink_port),
        ])
        wait_for_port(bind_host, self.superlink_port, superlink, timeout)
        if self.proxy:
            start_proxy(self.processes, ProxySpec(
                public_host=self.host, public_port=self.port, superlink_port=self.superlink_port,
                certificate=self.consortium.server_cert, private_key=self.consortium.server_key,
                ca_certificate=self.consortium.ca_cert, workdir=self.workspace / "proxy",
                log_dir=self.processes.log_dir), timeout)

    def flwr(self, *args: str, timeout: float = 120.0) -> str:
        """Run the ``flwr`` CLI against this SuperLink; a failure names the command and its output."""
        argv = [_tool("flwr"), *args]
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise LaunchError(f"'flwr {' '.join(args[:2])}' failed ({done.returncode}): "
                              f"{(done.stdout + done.stderr).strip()[-800:]}")
        return done.stdout

    def register(self, site: SiteNode) -> None:
        self.register_key(site.context.name, site.public_key)

    def register_key(self, name: str, public_key: Path) -> None:
        """Let the site holding ``public_key``'s private half in (Flower node authentication)."""
        check_file(public_key, f"public key of site {name}")
        self.flwr("supernode", "register", str(public_key), CONNECTION, "--name", name)

    @cached_property
    def project_app(self) -> Path:
        """This project's app, staged once: what the sites approve is what :meth:`submit` ships."""
        return stage_app(self.workspace / "app")

    def start_site(self, site: SiteNode, apps: Sequence[Path] | None = None) -> None:
        """Start the site's SuperNode behind the app-approval gate (deploy/clientapp_gate.py).

        Acting as the site's administrator, the launcher approves ``apps`` (default: this
        project's app as :meth:`submit` ships it); the site refuses any other app.
        """
        check_file(site.private_key, f"private key of site {site.context.name}")
        for app_dir in apps if apps is not None else [self.project_app]:
            approve(site.context.cache_path, fab_digest(app_dir), f"local launcher: {app_dir}")
        start_supernode(self.processes, self.address, self.consortium.ca_cert, site.private_key,
                        site.context, free_port(), self.workspace / "gate")

    def submit(self, run_config: dict[str, str | int], app_dir: Path | None = None) -> int:
        """Ship the app (default: this project, staged) with ``run_config``; returns the run id."""
        app_dir = app_dir or self.project_app
        overrides = self.workspace / "run-config.toml"
        overrides.write_text(tomli_w.dumps(run_config))
        output = self.flwr("run", str(app_dir), CONNECTION, "--run-config", str(overrides),
                           "--format", "json")
        try:
            return int(json.loads(output)["run-id"])
        except (json.JSONDecodeError, KeyError, ValueError):
            raise LaunchError(f"'flwr run' gave no run id: {output.strip()[-500:]}") from None

    def flower_status(self, run_id: int) -> str:
        output = self.flwr("list", CONNECTION, "--run-id", str(run_id), "--format", "json")
        try:
            runs = json.loads(output)["runs"]
            return str(runs[0]["status"])
        except (json.JSONDecodeError, KeyError, IndexError):
            return "unknown"

    def follow(self, run_id: int, run_dir: Path, on_round: Callable[[dict], None],
               timeout: float) -> dict:
        """Report each closed round as it lands in ``rounds.jsonl``; return the final run record."""
        log_path = run_dir / "rounds.jsonl"
        seen = 0
        deadline = time.monotonic() + timeout
        last_status_check = 0.0
        while True:
            self.processes.check_all_alive()
            if log_path.exists():
                lines = log_path.read_text(encoding="utf-8").splitlines()
                for line in lines[seen:]:
                    on_round(json.loads(line))
                seen = len(lines)
            record = _run_record(run_dir)
            if record.get("status") == "completed" and run_id in record.get("flower_runs", []):
                return record
            _raise_recorded_failure(run_dir, run_id)
            # `flwr list` is a whole Python process: only a backstop for a crashed ServerApp.
            if time.monotonic() - last_status_check > 20:
                last_status_check = time.monotonic()
                status = self.flower_status(run_id)
                if status.startswith("finished") and not status.endswith("completed"):
                    _raise_recorded_failure(run_dir, run_id)  # the ServerApp's reason, if it wrote one
                    raise FederationError(f"run {run_id} ended '{status}' before completing; "
                                          f"see 'flwr log {run_id}' and {self.processes.log_dir}")
            if time.monotonic() > deadline:
                raise FederationError(f"run {run_id} did not finish within {timeout:.0f} s")
            time.sleep(0.5)


def _run_record(run_dir: Path) -> dict:
    path = run_dir / "run.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _raise_recorded_failure(run_dir: Path, run_id: int) -> None:
    record = _run_record(run_dir)
    if record.get("status") == "failed" and record.get("failed_run") == run_id:
        raise FederationError(f"run {run_id} failed: {record.get('failure')}")
