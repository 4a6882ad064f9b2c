"""Publication policy: default-deny. An export goes ahead only if this finds nothing to refuse.

Refused, each with the asset or site named:
- an asset whose decision-tree outcome is "request an exemption" or "do not publish"; or "publish
  with restrictions" while the asset's access level is still public (the restriction must show);
- an asset with a missing or unknown licence, or an embargo that has not ended;
- any training data: a federated run never holds it; sites publish their de-identified data through
  their own channels;
- a site whose update shaped the weights (from the run record, never from the manifest's author)
  without a valid approval of this exact manifest;
- an asset file whose bytes do not match the SHA-256 the manifest pins.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from publication.manifest.approvals import ApprovalCheck
from publication.manifest.licences import licence_problem
from publication.manifest.schema import Asset, AssetFile, Manifest
from publication.manifest.trees import Decision, PublicationOutcome, decide


@dataclass(frozen=True)
class Refusal:
    subject: str
    reason: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.reason}"


def decisions(manifest: Manifest) -> list[Decision]:
    return [decide(asset, manifest.answers) for asset in manifest.assets]


def _asset_refusals(asset: Asset, decision: Decision, today: date) -> Iterable[Refusal]:
    subject = f"asset '{asset.kind}'"
    if asset.kind == "training_data":
        yield Refusal(
            subject,
            "a federated run never holds training data; each site publishes its "
            "de-identified data through its own channels",
        )
    if decision.outcome >= PublicationOutcome.EXEMPTION:
        last = decision.path[-1]
        yield Refusal(subject, f"decision tree says '{decision.outcome.title}' ({last.consequence})")
    elif decision.outcome == PublicationOutcome.RESTRICTED and asset.access == "public":
        yield Refusal(
            subject,
            "decision tree says 'publish with restrictions' but access is 'public'; "
            "set access to 'dua' or 'consortium'",
        )
    problem = licence_problem(asset)
    if problem:
        yield Refusal(subject, problem)
    if asset.embargo and asset.embargo > today:
        yield Refusal(subject, f"under embargo until {asset.embargo.isoformat()}")


def approval_refusals(contributors: Iterable[str], approvals: ApprovalCheck) -> list[Refusal]:
    contributors = sorted(contributors)
    if not contributors:
        return [Refusal("run record", "names no contributing site; nobody can approve its weights")]
    refusals = []
    for site in contributors:
        if site in approvals.valid:
            continue
        reason = approvals.rejected.get(site, "has not approved this manifest")
        refusals.append(Refusal(f"site '{site}'", reason))
    return refusals


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_refusals(manifest: Manifest, locate: Callable[[Asset, AssetFile], Path]) -> list[Refusal]:
    """Check every pinned asset file, found by ``locate`` (source tree or an export's copies)."""
    refusals = []
    for asset in manifest.assets:
        for file in asset.files:
            path = locate(asset, file)
            subject = f"asset '{asset.kind}' file {file.path}"
            if not path.is_file():
                refusals.append(Refusal(subject, f"not found at {path}"))
            elif sha256_file(path) != file.sha256:
                refusals.append(Refusal(subject, "SHA-256 differs from the manifest: the file changed after approval"))
    return refusals


def asset_refusals(manifest: Manifest, today: date) -> list[Refusal]:
    """What the policy refuses about the assets themselves: trees, licences, embargoes, data."""
    refusals: list[Refusal] = []
    for asset, decision in zip(manifest.assets, decisions(manifest), strict=True):
        refusals.extend(_asset_refusals(asset, decision, today))
    return refusals


def policy_refusals(
    manifest: Manifest, contributors: Iterable[str], approvals: ApprovalCheck, today: date
) -> list[Refusal]:
    """Everything the policy refuses about the manifest and its approvals (not the files)."""
    return asset_refusals(manifest, today) + approval_refusals(contributors, approvals)
