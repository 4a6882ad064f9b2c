"""Site approvals of a manifest: a signature with the site's own key over the manifest's digest.

The digest is the SHA-256 of the manifest file's exact bytes. Since every asset is pinned in the
manifest by its own SHA-256, changing any byte of the manifest, or of an asset (which forces the
manifest's pin to change), gives a different digest and voids every approval. What a site signs is
a small canonical JSON statement naming the site and the digest, so a signature cannot be replayed
as another site's approval nor for another manifest.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from common.errors import ManifestError
from common.keys import PrivateKey, PublicKey, fingerprint
from common.validation import SITE_NAME_PATTERN, StrictModel, describe_validation_error
from publication.signing import sign, signature_valid

_PURPOSE = "insite shared-assets manifest approval"


def manifest_digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def statement(site: str, digest: str) -> bytes:
    """The exact bytes a site signs."""
    return json.dumps(
        {"manifest_sha256": digest, "purpose": _PURPOSE, "site": site}, sort_keys=True, separators=(",", ":")
    ).encode()


class ManifestApproval(StrictModel):
    """One site's signed approval of one manifest version."""

    site: str = Field(pattern=SITE_NAME_PATTERN)
    manifest_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    key_fingerprint: str
    signature: str
    signed_at: str


class ApprovalSet(StrictModel):
    """What the coordinator collects: every valid approval of one manifest."""

    manifest_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    approvals: list[ManifestApproval]


def approve_manifest(site: str, raw_manifest: bytes, key: PrivateKey) -> ManifestApproval:
    digest = manifest_digest(raw_manifest)
    return ManifestApproval(
        site=site,
        manifest_sha256=digest,
        key_fingerprint=fingerprint(key.public_key()),
        signature=sign(key, statement(site, digest)),
        signed_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )


def approval_problem(approval: ManifestApproval, digest: str, keys: dict[str, PublicKey]) -> str | None:
    """Why ``approval`` does not count for the manifest with ``digest``; None when it is valid."""
    key = keys.get(approval.site)
    if key is None:
        return f"no public key for site '{approval.site}' among the consortium's keys"
    if approval.manifest_sha256 != digest:
        return (
            f"approval by '{approval.site}' is for another version of the manifest "
            f"({approval.manifest_sha256[:12]}..., this one is {digest[:12]}...)"
        )
    if not signature_valid(key, approval.signature, statement(approval.site, digest)):
        return f"signature by '{approval.site}' does not verify with its consortium key"
    return None


@dataclass(frozen=True)
class ApprovalCheck:
    """Per-site verdicts: valid sites, and the reason each other approval was rejected."""

    valid: tuple[str, ...]
    rejected: dict[str, str]


def check_approvals(approvals: list[ManifestApproval], digest: str, keys: dict[str, PublicKey]) -> ApprovalCheck:
    valid: list[str] = []
    rejected: dict[str, str] = {}
    for approval in approvals:
        problem = approval_problem(approval, digest, keys)
        if problem:
            rejected[approval.site] = problem
        else:
            valid.append(approval.site)
    return ApprovalCheck(tuple(sorted(set(valid))), rejected)


def collect(
    approvals: list[ManifestApproval], digest: str, keys: dict[str, PublicKey]
) -> tuple[ApprovalSet, ApprovalCheck]:
    """The coordinator's step: keep the valid approvals of this manifest, report the rest."""
    check = check_approvals(approvals, digest, keys)
    kept = {a.site: a for a in approvals if a.site in check.valid}
    return ApprovalSet(manifest_sha256=digest, approvals=[kept[s] for s in check.valid]), check


def _load(path: Path, model: type[BaseModel]) -> BaseModel:
    try:
        return model.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise ManifestError(f"{path}: approval file not found") from None
    except ValidationError as error:
        raise ManifestError(describe_validation_error(error, str(path))) from None


def load_approval(path: Path) -> ManifestApproval:
    return _load(path, ManifestApproval)  # type: ignore[return-value]


def load_approval_set(path: Path) -> ApprovalSet:
    return _load(path, ApprovalSet)  # type: ignore[return-value]


def default_collected_path(manifest: Path) -> Path:
    """Where ``collect`` writes and ``export`` looks for the collected approvals by default."""
    return manifest.with_suffix(".approvals.json")


def write_model(path: Path, value: BaseModel) -> None:
    path.write_text(value.model_dump_json(indent=1) + "\n", encoding="utf-8")
