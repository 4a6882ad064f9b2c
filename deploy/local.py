"""A federation on one host from a workspace folder: provisioning, sites, launch, resume.

Workspace layout (``insite demo`` creates it; ``insite demo --resume`` reuses it)::

    consortium/            CA, SuperLink certificate, registered site public keys
      private/             CA and SuperLink keys (0600)
    sites/<name>/data      the site's cases (client.cases layout)
    sites/<name>/cache     the site's preprocessing cache and optimizer state
    sites/<name>/keys/     the site's node key pair (private key 0600)
    run/                   the coordinator's run directory (server.checkpoint layout)
    logs/                  one log per process
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from client.site import SiteContext
from common.config import RunSettings, to_run_config
from common.errors import CheckpointError, ConfigError
from deploy.federation import LocalFederation, SiteNode
from deploy.pki import ConsortiumFiles, create_ca, create_site_key, issue_server_certificate
from deploy.processes import ProcessSet
from server.checkpoint import RunRecord, latest_checkpoint, load_checkpoint

LOOPBACK_NAMES = ["localhost", "127.0.0.1", "::1"]


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
    def logs(self) -> Path:
        return self.root / "logs"

    def site_dir(self, name: str) -> Path:
        return self.root / "sites" / name

    def site_names(self) -> list[str]:
        sites = self.root / "sites"
        if not sites.is_dir():
            raise ConfigError(f"{self.root}: no sites/ folder; each site needs sites/<name>/data")
        return sorted(p.name for p in sites.iterdir() if p.is_dir())

    def site(self, name: str, threads: int) -> SiteNode:
        base = self.site_dir(name)
        context = SiteContext(name, base / "data", base / "cache", "auto", threads)
        return SiteNode(context, base / "keys" / "node.key", base / "keys" / "node.pub")


def default_threads(sites: int) -> int:
    """Share the cores between sites that train at the same time on one host."""
    return max(1, (os.cpu_count() or 1) // sites)


def provision(workspace: Workspace, site_names: list[str]) -> None:
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


def run_local(workspace: Workspace, settings: RunSettings, on_event: Callable[[str], None],
              on_round: Callable[[dict], None], round_offset: int = 0,
              initial_weights: Path | None = None, timeout: float = 4 * 3600,
              port: int | None = None) -> dict:
    """Start SuperLink + SuperNodes, run the rounds, stop every process; returns the run record.

    ``port`` fixes the SuperLink's port (refused with a clear error if taken); default: a free one.
    """
    names = workspace.site_names()
    threads = default_threads(len(names))
    with ProcessSet(workspace.logs, {}) as processes:
        federation = LocalFederation(workspace.root, workspace.consortium, processes, port=port)
        on_event("starting SuperLink (TLS, SuperNode authentication)")
        federation.start_superlink()
        for name in names:
            site = workspace.site(name, threads)
            federation.register(site)
            federation.start_site(site)
        on_event(f"started {len(names)} SuperNodes: {', '.join(names)} ({threads} thread(s) each)")
        run_id = federation.submit(to_run_config(settings, workspace.run_dir, round_offset,
                                                 initial_weights))
        on_event(f"submitted Flower run {run_id}")
        return federation.follow(run_id, workspace.run_dir, on_round, timeout)


def resume_point(run_dir: Path) -> tuple[RunSettings, int, Path]:
    """Settings, rounds already done and the checkpoint to continue from."""
    record = RunRecord(run_dir)
    settings = record.settings()
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise CheckpointError(f"{run_dir}: no checkpoint yet; start the run again instead")
    done = load_checkpoint(checkpoint).round
    if done >= settings.rounds and record.read()["rounds_done"] >= settings.rounds:
        raise CheckpointError(f"{run_dir}: all {settings.rounds} rounds are done; nothing to resume")
    return settings, done, checkpoint
