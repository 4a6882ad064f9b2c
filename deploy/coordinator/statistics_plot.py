"""The sites' data statistics as one PNG: intensity histograms overlaid, spacing, size and lesion volumes.

Drawn with a bare matplotlib ``Figure`` (no pyplot, no display needed) from a statistics run's record. Withheld
bins are drawn empty and the figure says so: the plot shows what the sites released, no more.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from common.files import atomic_write
from common.statistics import bin_labels


def _released(hist: list[int | None]) -> np.ndarray:
    return np.array([value or 0 for value in hist], dtype=float)


def _bars(axes: Axes, labels: list[str], series: dict[str, list[int | None]], title: str) -> None:
    """Grouped bars: one group per bin, one bar per series."""
    width = 0.8 / max(len(series), 1)
    positions = np.arange(len(labels))
    for n, (name, hist) in enumerate(series.items()):
        axes.bar(positions + n * width, _released(hist), width, label=name)
    axes.set_xticks(positions + 0.4 - width / 2, labels, rotation=45, ha="right", fontsize=7)
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=7)


def _intensity(axes: Axes, sites: dict[str, Any]) -> None:
    for site, found in sorted(sites.items()):
        for modality, figures in found["intensity"].items():
            counts = _released(figures["hist"])
            if counts.sum() == 0:
                continue
            low, high = figures["range"]
            centres = low + (np.arange(len(counts)) + 0.5) * (high - low) / len(counts)
            axes.plot(centres, counts / counts.sum(), label=f"{site} ({modality})")
    axes.set_xlabel("raw scanner units", fontsize=8)
    axes.set_ylabel("share of voxels", fontsize=8)
    axes.set_title("intensity histograms", fontsize=9)
    axes.legend(fontsize=7)


def write_statistics_plot(statistics: dict[str, Any], path: Path) -> Path:
    """Draw the sites side by side into ``path`` (PNG); returns it."""
    sites, settings = statistics["sites"], statistics["settings"]
    figure = Figure(figsize=(12, 8))
    grid = figure.subplots(2, 2)
    _intensity(grid[0][0], sites)
    _bars(
        grid[0][1],
        bin_labels(tuple(settings["lesion_edges_ml"])),
        {site: found["lesion_volume_ml"] for site, found in sorted(sites.items())},
        "lesion volume, mL (lesions per bin)",
    )
    for axes, key, edges, what in (
        (grid[1][0], "spacing_mm", "spacing_edges_mm", "voxel spacing, mm (cases per bin; x/y/z)"),
        (grid[1][1], "shape", "shape_edges", "volume size, voxels (cases per bin; x/y/z)"),
    ):
        series = {f"{site} {axis}": hist for site, found in sorted(sites.items()) for axis, hist in found[key].items()}
        _bars(axes, bin_labels(tuple(settings[edges])), series, what)
    failed = ", ".join(statistics.get("failures", {})) or "none"
    figure.suptitle(
        f"data statistics of {len(sites)} site(s), collected {statistics['collected']}; failed: {failed}; "
        f"withheld bins (fewer than {settings['min_count']}) drawn empty",
        fontsize=10,
    )
    figure.tight_layout()
    buffer = BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    atomic_write(path, buffer.getvalue())
    return path
