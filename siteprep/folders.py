"""Folders of the site tools that write trees: what must stay out of the output, and private work folders.

A key file, a quarantine or a QA folder inside the output would travel with it when the output is
handed on; an output inside its source would be read again as input on the next run.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


def layout_problem(source: Path, destination: Path, kept_out: Iterable[tuple[str, Path]], why: str) -> str | None:
    """The first way these folders would mix, as a message, or None; ``why`` says why ``kept_out`` must stay out."""
    output = destination.resolve()
    for what, path in kept_out:
        if path.resolve().is_relative_to(output):
            return f"{what} {path} is inside the output folder {destination}; {why}"
    if output.is_relative_to(source.resolve()):
        return f"output folder {destination} is inside the source folder {source}"
    return None


@contextmanager
def private_folder(parent: Path, prefix: str) -> Iterator[Path]:
    """A new hidden folder in ``parent`` (made if missing), removed with whatever is left in it.

    Work is finished there and then moved out by rename, so a reader of ``parent`` never sees it
    half done; a crash leaves only a hidden folder named by ``prefix``.
    """
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
