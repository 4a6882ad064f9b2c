"""What a site carries from one round to the next, kept in its cache folder and never sent.

A drift-correcting strategy (FedDyn) gives each site state of its own between rounds. It lives
under the site's cache, one folder per run (:data:`common.protocol.RUN_KEY`), so it survives a
SuperNode restart and a coordinator resume, and a new run starts from nothing: opening the state
of a run removes what earlier runs left. Files are written atomically and readable by the site's
service account only, like the rest of the cache.
"""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import torch

from common.errors import SiteDataError
from common.files import atomic_write

_RUN_KEY = re.compile(r"^[0-9a-f]{16,64}$")


class SiteState:
    """The current run's between-round state of one site: named tensor dictionaries."""

    def __init__(self, cache_path: Path, run_key: str) -> None:
        if not _RUN_KEY.match(run_key):  # it names a folder: never let a message choose a path
            raise SiteDataError(
                f"the coordinator sent no valid run key ({run_key!r}); is its insite older than this site's?"
            )
        root = cache_path / "round-state"
        self.folder = root / run_key
        if root.is_dir():
            for earlier in root.iterdir():
                if earlier != self.folder:
                    shutil.rmtree(earlier) if earlier.is_dir() else earlier.unlink()

    def load(self, name: str) -> dict[str, torch.Tensor] | None:
        """The tensors saved under ``name`` in this run, or None before the first save."""
        path = self.folder / f"{name}.pt"
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            return None
        except Exception as error:  # torch raises many types for a damaged file
            raise SiteDataError(
                f"{path} is damaged ({error}); delete it to start this run's {name} state afresh"
            ) from None

    def save(self, name: str, tensors: dict[str, torch.Tensor]) -> None:
        buffer = io.BytesIO()
        torch.save(tensors, buffer)
        atomic_write(self.folder / f"{name}.pt", buffer.getvalue(), mode=0o600)
