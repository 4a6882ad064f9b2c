"""Where the dashboard reads from: one consortium's keys, its SuperLink's database, its runs, its manifests.

A production coordinator keeps all of these in its consortium folder
(:class:`deploy.coordinator.consortium.CoordinatorDir`); the demo's workspace holds the same
pieces in other places and builds its own :class:`DashboardSource`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from common.run_record import RUN_RECORD
from deploy.coordinator.consortium import CoordinatorDir
from deploy.coordinator.pki import ConsortiumFiles

TOKEN_FILE = "dashboard.token"


@dataclass(frozen=True)
class DashboardSource:
    """The files one dashboard shows; it only ever reads them (the token file aside)."""

    name: str
    pki: ConsortiumFiles  # sites/<name>.pub, the TLS certificate and key, private/
    database: Path  # the SuperLink's SQLite state
    runs: Path  # a folder of run folders, or one run folder
    manifests: tuple[Path, ...] = field(default=())

    @property
    def token_path(self) -> Path:
        return self.pki.root / "private" / TOKEN_FILE

    def run_dirs(self) -> list[Path]:
        """Every run folder, oldest first (a consortium names its run folders by their start time)."""
        if (self.runs / RUN_RECORD).is_file():
            return [self.runs]
        return sorted(path.parent for path in self.runs.glob(f"*/{RUN_RECORD}"))


def consortium_source(coordinator: CoordinatorDir, manifests: tuple[Path, ...] = ()) -> DashboardSource:
    """The dashboard of a production consortium folder: runs under ``runs/``, manifests given, else ``publish/``."""
    return DashboardSource(
        name=coordinator.settings().name,
        pki=coordinator.files,
        database=coordinator.root / "superlink" / "state.db",
        runs=coordinator.root / "runs",
        manifests=manifests or tuple(sorted((coordinator.root / "publish").glob("*manifest*.toml"))),
    )
