"""The site administrator's side of app approval: digest an app, approve it, list, revoke.

The digest is the SHA-256 of the FAB (Flower app bundle) exactly as ``flwr run APP_DIR`` builds
and ships it (Flower's own ``build_fab_from_disk``, deterministic: fixed timestamps, sorted
files), which is also the ``fab_hash`` the SuperNode receives. So an administrator can approve
an app folder they reviewed, or a ``.fab`` file handed to them, and the gate recognises it.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import asdict
from pathlib import Path

from flwr.cli.build import build_fab_from_disk

from common.errors import InsiteError
from common.files import atomic_write
from deploy.site.approved_apps import (
    APPROVALS_FILE,
    DIGEST,
    AppApproval,
    ApprovalListError,
    read_approvals,
    utc_now,
)

FAB_MANIFEST = ".info/CONTENT"


class AppApprovalError(InsiteError):
    """An app path is neither an app folder nor a FAB, a digest is unknown, or the approval list is unreadable."""


def fab_digest(path: Path) -> str:
    """SHA-256 (hex) of the FAB Flower ships for ``path``: an app folder or a built ``.fab`` file."""
    if path.is_dir():
        if not (path / "pyproject.toml").is_file():
            raise AppApprovalError(f"{path}: not a Flower app folder (no pyproject.toml)")
        try:
            return hashlib.sha256(build_fab_from_disk(path)).hexdigest()
        except ValueError as error:  # Flower's invalid-config and path-depth errors
            raise AppApprovalError(
                f"{path}: Flower cannot build an app bundle from it: {' '.join(str(error).split())}"
            ) from None
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as bundle:
            if FAB_MANIFEST in bundle.namelist():
                return hashlib.sha256(path.read_bytes()).hexdigest()
    if not path.exists():
        raise AppApprovalError(f"{path}: not found")
    raise AppApprovalError(f"{path}: neither a Flower app folder nor a .fab app bundle")


def approvals(cache: Path) -> list[AppApproval]:
    """The site's approved apps (empty when nothing was ever approved)."""
    try:
        return read_approvals(cache) or []
    except ApprovalListError as error:
        raise AppApprovalError(str(error)) from None


def approve_app(cache: Path, digest: str, note: str = "") -> AppApproval:
    """Add ``digest`` to the site's approval list; approving it again keeps the first approval."""
    if not DIGEST.fullmatch(digest):
        raise AppApprovalError(f"'{digest}' is not a SHA-256 digest (64 lowercase hex characters)")
    current = approvals(cache)
    for approval in current:
        if approval.digest == digest:
            return approval
    approval = AppApproval(digest, utc_now(), note)
    write_approvals(cache, [*current, approval])
    return approval


def revoke(cache: Path, digest: str) -> AppApproval:
    """Remove ``digest`` from the approval list: the site refuses that app from its next message on."""
    current = approvals(cache)
    kept = [a for a in current if a.digest != digest]
    if len(kept) == len(current):
        raise AppApprovalError(f"{digest} is not approved at this site ({cache}); 'insite site approved' lists what is")
    write_approvals(cache, kept)
    return next(a for a in current if a.digest == digest)


def write_approvals(cache: Path, approvals: list[AppApproval]) -> None:
    """Replace the approval file atomically, so the gate never reads half a list."""
    text = json.dumps({"apps": [asdict(a) for a in approvals]}, indent=1) + "\n"
    atomic_write(cache / APPROVALS_FILE, text.encode())
