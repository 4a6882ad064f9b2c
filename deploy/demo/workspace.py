"""The demo's federation on one host, from one workspace folder: provisioning, sites, the run.

The demo plays every role on this machine with the production pieces: the coordinator's PKI and
SuperLink (:mod:`deploy.coordinator`), each site's SuperNode behind its app-approval gate
(:mod:`deploy.site`). What only the demo does: it holds every site's key, approves the app as each
site's administrator, and shares the cores between the sites.

Workspace layout (``insite demo`` creates it; ``insite demo --resume`` reuses it)::

    consortium/            CA, SuperLink certificate, registered site public keys
      private/             CA and SuperLink keys (0600)
    sites/<name>/data      the site's cases (client.cases layout)
    sites/<name>/cache     the site's preprocessing cache, approved apps, egress ledger
    sites/<name>/keys/     the site's node key pair (private key 0600)
    run/                   the coordinator's run directory (common.run_record layout)
    evaluation/            the federated evaluation of the consensus and local-only models
    logs/                  one log per process
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from client.site import SiteContext
from common.errors import ConfigError
from common.settings import RunSettings
from deploy.coordinator.dashboard.source import DashboardSource
from deploy.coordinator.pki import (
    LOOPBACK_NAMES,
    ConsortiumFiles,
    create_ca,
    issue_server_certificate,
)
from deploy.coordinator.run_supervisor import RunSupervisor
from deploy.coordinator.superlink import SuperLink
from deploy.host.processes import ProcessSet, free_port
from deploy.node_keys import create_site_key
from deploy.site.app_approval import approve_app, fab_digest
from deploy.site.supernode import start_supernode


@dataclass(frozen=True)
class DemoSite:
    """A site as the demo starts it: its context and its key pair's files."""

    context: SiteContext
    private_key: Path
    public_key: Path


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def consortium(self) -> ConsortiumFiles:
        return ConsortiumFiles(self.root / "consortium")

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def evaluation_dir(self) -> Path:
        return self.root / "evaluation"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def site_dir(self, name: str) -> Path:
        return self.root / "sites" / name

    def site_names(self) -> list[str]:
        sites = self.root / "sites"
        if not sites.is_dir():
            raise ConfigError(f"{self.root}: no sites/ folder; each site needs sites/<name>/data")
        return sorted(p.name for p in sites.iterdir() if p.is_dir())

    @property
    def dashboard(self) -> DashboardSource:
        """What the coordinator's dashboard shows of the demo: its one run and the manifest it publishes."""
        return DashboardSource(
            name="insite demo consortium",
            pki=self.consortium,
            database=self.root / "superlink" / "state.db",
            runs=self.run_dir,
            manifests=(self.root / "publish" / "manifest.toml",),
        )

    def site(self, name: str, threads: int) -> DemoSite:
        base = self.site_dir(name)
        context = SiteContext(name, base / "data", base / "cache", "auto", threads)
        return DemoSite(context, base / "keys" / "node.key", base / "keys" / "node.pub")


def default_threads(sites: int) -> int:
    """Share the cores between sites that train at the same time on one host."""
    return max(1, (os.cpu_count() or 1) // sites)


def provision_demo(workspace: Workspace, site_names: list[str]) -> None:
    """CA + SuperLink certificate for loopback, and a key pair per site (skips what exists)."""
    files = workspace.consortium
    if not files.ca_cert.exists():
        create_ca(files)
    if not files.server_cert.exists():
        issue_server_certificate(files, LOOPBACK_NAMES)
    for name in site_names:
        site = workspace.site(name, 1)
        if not site.private_key.exists():
            create_site_key(site.private_key, site.public_key)
        registered = files.site_public_key(name)
        registered.parent.mkdir(parents=True, exist_ok=True)
        registered.write_bytes(site.public_key.read_bytes())


def start_demo_site(superlink: SuperLink, site: DemoSite, workspace: Path, apps: list[Path] | None = None) -> None:
    """Approve ``apps`` as the site's administrator (default: the project's), start its SuperNode."""
    for app_dir in apps if apps is not None else [superlink.project_app]:
        approve_app(site.context.cache_path, fab_digest(app_dir), f"demo: {app_dir}")
    start_supernode(
        superlink.processes,
        superlink.address,
        superlink.consortium.ca_cert,
        site.private_key,
        site.context,
        free_port(),
        workspace / "gate",
    )


def run_demo_federation(
    workspace: Workspace,
    settings: RunSettings,
    on_event: Callable[[str], None],
    on_round: Callable[[dict], None],
    port: int | None = None,
    chaos: Callable[[ProcessSet], AbstractContextManager[object]] | None = None,
    run_dir: Path | None = None,
) -> dict:
    """Start SuperLink + SuperNodes, see the run through, stop every process; returns the run record.

    ``run_dir`` (default: the workspace's training run) is the run folder to see through; it
    decides what the run does (train, or evaluate) and where it starts (fresh, or from its last checkpoint). ``port``
    fixes the SuperLink's port (refused with a clear error if taken); default: a free one.
    ``chaos`` makes faults while the run goes on (``insite demo --chaos``).
    """
    names = workspace.site_names()
    threads = default_threads(len(names))
    with ProcessSet(workspace.logs, {}) as processes:
        superlink = SuperLink(workspace.root, workspace.consortium, processes, port=port)
        on_event("starting SuperLink (TLS, SuperNode authentication)")
        superlink.start()
        for name in names:
            site = workspace.site(name, threads)
            superlink.register_key(name, site.public_key)
            start_demo_site(superlink, site, workspace.root)
        on_event(f"started {len(names)} SuperNodes: {', '.join(names)} ({threads} thread(s) each)")
        supervisor = RunSupervisor(superlink, run_dir or workspace.run_dir, on_round, on_event, settings.time_limit_s())
        if chaos is None:
            return supervisor.run()
        with chaos(processes):
            return supervisor.run()
