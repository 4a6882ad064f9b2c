"""The coordinator's SuperLink: started (with its Fleet-only proxy) and driven through its Control API.

Everything is real Flower over TLS: the SuperLink serves with the consortium's certificate and
requires SuperNode authentication; each site is registered by its public key. With the proxy (the
default) the SuperLink listens on a private loopback port that only the coordinator's ``flwr`` CLI
and ServerApp use, and sites reach the Fleet API through nginx (:mod:`deploy.coordinator.proxy`).
Used by ``insite coord launch|run`` and by the demo, which runs the same coordinator on one host.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from functools import cached_property
from pathlib import Path

import tomli_w

from common.errors import LaunchError
from common.files import require_file
from deploy.coordinator.app_bundle import stage_app
from deploy.coordinator.pki import ConsortiumFiles
from deploy.coordinator.proxy import ProxySpec, start_proxy
from deploy.host.flower import CONNECTION, flower_env, flower_tool, write_connection
from deploy.host.processes import (
    LOOPBACK,
    ProcessSet,
    RestartPolicy,
    free_port,
    require_port_free,
    wait_for_port,
)

log = logging.getLogger(__name__)


class SuperLink:
    """Starts and drives the coordinator's SuperLink on this host.

    ``host``/``port`` is the public address sites connect to. With ``proxy`` (the default) that
    is nginx, and the SuperLink itself listens on a private loopback port that only the
    coordinator's ``flwr`` CLI uses; without it, the SuperLink serves every API on the public
    address (as Flower does out of the box).
    """

    def __init__(
        self,
        workspace: Path,
        consortium: ConsortiumFiles,
        processes: ProcessSet,
        host: str = LOOPBACK,
        port: int | None = None,
        proxy: bool = True,
    ) -> None:
        self.workspace = workspace
        self.consortium = consortium
        self.processes = processes
        self.host = host
        self.port = port
        self.proxy = proxy
        self.private_port: int | None = None
        self.flwr_home = workspace / "flwr-home"
        self.database = workspace / "superlink" / "state.db"
        self.env = flower_env(self.flwr_home)
        processes.env = self.env

    @property
    def address(self) -> str:
        """Where SuperNodes connect."""
        return f"{self.host}:{self.port}"

    @property
    def control_address(self) -> str:
        """Where the coordinator's ``flwr`` CLI connects (Control API)."""
        return f"{LOOPBACK}:{self.private_port}" if self.proxy else self.address

    def start(self, timeout: float = 60.0) -> int:
        """Start the SuperLink and, with ``proxy``, the public Fleet-only proxy; returns its private port."""
        for path, what in (
            (self.consortium.ca_cert, "consortium CA certificate"),
            (self.consortium.server_cert, "SuperLink certificate"),
            (self.consortium.server_key, "SuperLink private key"),
        ):
            require_file(path, what)
        if self.port is None:
            self.port = free_port(self.host)
        require_port_free(self.host, self.port)
        bind_host = LOOPBACK if self.proxy else self.host
        self.private_port = free_port(LOOPBACK) if self.proxy else self.port
        write_connection(self.flwr_home, self.control_address, self.consortium.ca_cert)
        self.database.parent.mkdir(parents=True, exist_ok=True)
        superlink = self.processes.start(
            "superlink",
            [
                sys.executable,
                "-m",
                "deploy.coordinator.superlink_launcher",
                # Node registrations and runs survive a restart (the processes are restarted).
                "--database",
                str(self.database),
                "--ssl-ca-certfile",
                str(self.consortium.ca_cert),
                "--ssl-certfile",
                str(self.consortium.server_cert),
                "--ssl-keyfile",
                str(self.consortium.server_key),
                "--enable-supernode-auth",
                "--disable-runtime-dependency-installation",
                "--host",
                bind_host,
                "--port",
                str(self.private_port),
            ],
            restart=RestartPolicy(),
        )
        wait_for_port(bind_host, self.private_port, superlink, timeout)
        if self.proxy:
            start_proxy(
                self.processes,
                ProxySpec(
                    public_host=self.host,
                    public_port=self.port,
                    superlink_port=self.private_port,
                    certificate=self.consortium.server_cert,
                    private_key=self.consortium.server_key,
                    ca_certificate=self.consortium.ca_cert,
                    workdir=self.workspace / "proxy",
                    log_dir=self.processes.log_dir,
                ),
                timeout,
            )
        return self.private_port

    def flwr(self, *args: str, timeout: float = 120.0) -> str:
        """Run the ``flwr`` CLI against this SuperLink; a failure names the command and its output."""
        argv = [flower_tool("flwr"), *args]
        done = subprocess.run(
            argv, env=self.env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
        if done.returncode != 0:
            raise LaunchError(
                f"'flwr {' '.join(args[:2])}' failed ({done.returncode}): {(done.stdout + done.stderr).strip()[-800:]}"
            )
        return done.stdout

    def register_key(self, name: str, public_key: Path) -> None:
        """Let the site holding ``public_key``'s private half in (Flower node authentication)."""
        require_file(public_key, f"public key of site {name}")
        try:
            self.flwr("supernode", "register", str(public_key), CONNECTION, "--name", name)
        except LaunchError as error:
            # The SuperLink's database keeps registrations across restarts: registering a site
            # again at each start is then a no-op, not an error.
            if "Public key already in use" not in str(error):
                raise

    @cached_property
    def project_app(self) -> Path:
        """This project's app, staged once: what the sites approve is what :meth:`submit` ships."""
        return stage_app(self.workspace / "app")

    def submit(self, run_config: dict[str, str | int], app_dir: Path | None = None) -> int:
        """Ship the app (default: this project, staged) with ``run_config``; returns the run id."""
        app_dir = app_dir or self.project_app
        overrides = self.workspace / "run-config.toml"
        overrides.write_text(tomli_w.dumps(run_config))
        output = self.flwr("run", str(app_dir), CONNECTION, "--run-config", str(overrides), "--format", "json")
        try:
            return int(json.loads(output)["run-id"])
        except (json.JSONDecodeError, KeyError, ValueError):
            raise LaunchError(f"'flwr run' gave no run id: {output.strip()[-500:]}") from None

    def run_ids(self) -> set[int]:
        """The ids of every run the SuperLink holds, in any state."""
        output = self.flwr("list", CONNECTION, "--format", "json", timeout=60)
        try:
            return {int(run["run-id"]) for run in json.loads(output)["runs"]}
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise LaunchError(f"'flwr list' gave no run list: {output.strip()[-500:]}") from None

    def flower_status(self, run_id: int) -> str:
        output = self.flwr("list", CONNECTION, "--run-id", str(run_id), "--format", "json")
        try:
            runs = json.loads(output)["runs"]
            return str(runs[0]["status"])
        except (json.JSONDecodeError, KeyError, IndexError):
            return "unknown"
