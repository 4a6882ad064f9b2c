"""The folder rule every site tool that writes a tree shares: what must stay out of the output stays out.

A key file, a quarantine or a QA folder inside the output would travel with it when the output is
handed on; an output inside its source would be read again as input on the next run.
"""

from __future__ import annotations

from collections.abc import Iterable
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
