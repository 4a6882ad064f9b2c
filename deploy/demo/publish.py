"""The end of ``insite demo``: publish the demo run's consensus model the way a consortium would.

Each synthetic site signs with its own key: the node key provisioning created in its folder, or a
new Ed25519 key made there (as a real site would, on its own machine); only public halves travel.
The researcher drafts the manifest from the template; if the decision trees allow every asset, each
site approves, the coordinator collects, exports and verifies. If not, nothing is signed or
exported and the result says why.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from common.errors import ExportError
from common.keys import load_private_key
from publication.draft import DEFAULT_TEMPLATE, draft_manifest
from publication.export import export_run
from publication.manifest.approvals import (
    approve_manifest,
    collect,
    default_collected_path,
    manifest_digest,
    write_model,
)
from publication.manifest.policy import asset_refusals, decisions
from publication.signing import create_key, load_public_keys, public_key_path
from publication.verify import Check

log = logging.getLogger(__name__)


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

    def summary(self) -> list[str]:
        """Lines for a person at the terminal: outcome per asset, then the bundle or the refusals."""
        lines = [f"manifest {self.manifest}"]
        lines += [f"  {kind}: {outcome}" for kind, outcome in self.outcomes.items()]
        if self.published:
            lines.append(f"verified MONAI bundle: {self.bundle}")
        else:
            lines += ["not published:"] + [f"  {reason}" for reason in self.refusals]
            lines += [f"  {c.name}: {c.detail}" for c in self.checks if not c.ok]
        return lines


def ensure_key(private_key: Path) -> Path:
    """A site's signing key: the one it has (e.g. its node key), else a new Ed25519 key (0600)."""
    if not private_key.exists():
        create_key(private_key)
    return private_key


def demo_publish(
    run_dir: Path,
    site_keys: Mapping[str, Path],
    out_dir: Path,
    *,
    consortium_keys: Path | None = None,
    template: Path = DEFAULT_TEMPLATE,
    today: date | None = None,
) -> PublishResult:
    """Draft, approve (every site in ``site_keys``), collect, export to ``out_dir/export``, verify.

    ``site_keys`` maps each site to its private key (the provisioned node key, or a path where an
    Ed25519 key is created). ``consortium_keys`` is the coordinator's folder of ``<site>.pub``
    (e.g. the PKI's ``sites/``); by default it is built in ``out_dir`` from the ``.pub`` beside
    each private key. ``out_dir`` receives ``manifest.toml``, ``approvals/``,
    ``manifest.approvals.json`` and ``export/`` (which must not exist yet: exports are never
    overwritten). A refusal at any step is returned in ``refusals``, never raised.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for key in site_keys.values():
        ensure_key(key)
    keys_dir = consortium_keys or out_dir / "consortium-keys"
    if consortium_keys is None:
        keys_dir.mkdir(exist_ok=True)
        for site, key in site_keys.items():
            shutil.copyfile(public_key_path(key), keys_dir / f"{site}.pub")
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
    for site, key in site_keys.items():
        approval = approve_manifest(site, loaded.raw, load_private_key(key))
        write_model(approvals_dir / f"{site}.json", approval)
        signed.append(approval)
    approval_set, _ = collect(signed, manifest_digest(loaded.raw), load_public_keys(keys_dir))
    collected = default_collected_path(loaded.path)
    write_model(collected, approval_set)
    try:
        result = export_run(run_dir, loaded.path, collected, keys_dir, out_dir / "export", today)
    except ExportError as error:  # e.g. a contributing site that did not approve
        return PublishResult(loaded.path, outcomes, [str(error)])
    return PublishResult(loaded.path, outcomes, [], result.folder, result.bundle, result.report.checks)
