"""The end of ``insite demo``: publish the demo run's consensus model the way a consortium would.

Each synthetic site gets its own approval key in its own folder (as a real site would create it on
its own machine) and hands only the public half to the coordinator; the researcher drafts the
manifest from the template; if the decision trees allow every asset, each site approves, the
coordinator collects, exports and verifies. If not, nothing is signed or exported and the result
says why.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from common.manifest.approvals import (approve, collect, default_collected_path, manifest_digest,
                                      write_model)
from common.manifest.policy import asset_refusals, decisions
from common.signing import create_key, load_private_key, load_public_keys, public_key_path
from server.export.draft import draft_manifest
from server.export.verify import Check
from server.export.writer import export_run

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE = Path(__file__).resolve().parents[2] / "configs" / "manifest.toml"
SITE_KEY = "approval.key"


@dataclass(frozen=True)
class PublishResult:
    """What the demo prints: per-asset outcomes, why it was refused, or the verified export."""

    manifest: Path
    outcomes: dict[str, str]
    refusals: list[str] = field(default_factory=list)
    export: Path | None = None
    bundle: Path | None = None
    checks: list[Check] = field(default_factory=list)

    @property
    def published(self) -> bool:
        return self.bundle is not None and all(check.ok for check in self.checks)


def site_key(site_dir: Path) -> Path:
    """The site's approval key, created (0600) in the site's own folder on first use."""
    key = site_dir / SITE_KEY
    if not key.exists():
        create_key(key)
    return key


def demo_publish(run_dir: Path, site_dirs: Mapping[str, Path], out_dir: Path,
                 template: Path = DEFAULT_TEMPLATE, today: date | None = None) -> PublishResult:
    """Draft, approve (every site in ``site_dirs``), collect, export to ``out_dir/export``, verify.

    ``out_dir`` receives ``manifest.toml``, ``approvals/``, ``consortium-keys/``,
    ``manifest.approvals.json`` and ``export/`` (which must not exist yet: exports are never
    overwritten). Raises :class:`common.errors.ExportError` only if an approved export fails.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    keys_dir = out_dir / "consortium-keys"
    keys_dir.mkdir(exist_ok=True)
    for site, folder in site_dirs.items():
        shutil.copyfile(public_key_path(site_key(folder)), keys_dir / f"{site}.pub")
    loaded = draft_manifest(run_dir, template, out_dir / "manifest.toml")
    manifest = loaded.manifest
    outcomes = {d.kind: d.outcome.title for d in decisions(manifest)}
    refused = asset_refusals(manifest, today or date.today())
    if refused:
        log.warning("manifest does not allow publication: %s", "; ".join(map(str, refused)))
        return PublishResult(loaded.path, outcomes, [str(r) for r in refused])
    approvals_dir = out_dir / "approvals"
    approvals_dir.mkdir(exist_ok=True)
    signed = []
    for site, folder in site_dirs.items():
        approval = approve(site, loaded.raw, load_private_key(site_key(folder)))
        write_model(approvals_dir / f"{site}.json", approval)
        signed.append(approval)
    approval_set, _ = collect(signed, manifest_digest(loaded.raw), load_public_keys(keys_dir))
    collected = default_collected_path(loaded.path)
    write_model(collected, approval_set)
    result = export_run(run_dir, loaded.path, collected, keys_dir, out_dir / "export", today)
    return PublishResult(loaded.path, outcomes, [], result.folder, result.bundle, result.report.checks)
