"""Secret files (private keys, pseudonymisation keys): created 0600 from the first byte."""

from __future__ import annotations

import os
from pathlib import Path

from common.errors import ProvisioningError


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
