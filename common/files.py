"""Files that must never be seen half-written, and secrets that must never be seen by others.

Both the coordinator runtime (checkpoints, run record), the site runtime (its egress ledger) and the
site's tools (the pseudonymisation key) write through :func:`atomic_write`: a reader, or a crash,
sees the old file or the new one, never a mix.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from common.errors import ProvisioningError


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` by ``data`` in one step; the file is created with ``mode`` from its first byte.

    The temporary file sits in the same folder (a rename is atomic only within one file system)
    and is flushed to disk before the rename, so a power cut leaves the old or the new content.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(handle, mode)
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_secret(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 and write ``data``; refuses to overwrite an existing key.

    ``os.open`` with the mode, not chmod afterwards: there is no moment when others can read it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ProvisioningError(f"{path}: a key already exists; refusing to overwrite it") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a file; otherwise a :class:`ProvisioningError` saying what is missing."""
    if not path.is_file():
        raise ProvisioningError(f"{path}: {what} not found")
    return path
