"""The configuration files insite ships: templates and defaults, found wherever insite is installed.

Commands default to these files, so they work from any folder; a site or coordinator copies one
to edit it (``insite site init`` writes a site's own de-identification settings).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

FOLDER = Path(str(files(__name__)))


def shipped(name: str) -> Path:
    """The shipped file ``name`` (e.g. ``federation.toml``)."""
    return FOLDER / name
