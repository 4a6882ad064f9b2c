"""The sites' data statistics side by side, in words: one row per figure, one column per site.

Read from a statistics run's record (``run.json`` ``statistics``, written by
:mod:`server.statistics`), for ``insite coord stats`` and the dashboard alike, so both show the
same words. Quantiles are read off the released histograms (withheld bins count as empty), so
they are as coarse as the bins: a quantile names a bin, never a value of one case.
"""

from __future__ import annotations

from typing import Any

from common.statistics import AXES, bin_labels

Histogram = list[int | None]


def _count(value: int | None) -> str:
    return "withheld" if value is None else str(value)


def counted(counts: dict[str, int | None]) -> str:
    """``{"MR": 6, "CT": None}`` as 'MR 6, CT withheld'; 'none' when empty."""
    return ", ".join(f"{name} {_count(value)}" for name, value in counts.items()) or "none"


def occupied_bins(hist: Histogram, labels: list[str]) -> str:
    """The bins that hold something (or are withheld), as 'label: count'."""
    parts = [f"{label}: {_count(value)}" for label, value in zip(labels, hist, strict=True) if value != 0]
    return ", ".join(parts) or "none"


def quantile_bin(hist: Histogram, labels: list[str], fraction: float) -> str | None:
    """The bin holding the ``fraction`` quantile of the released counts; None if nothing was released."""
    counts = [value or 0 for value in hist]
    total = sum(counts)
    if total == 0:
        return None
    running = 0
    for label, count in zip(labels, counts, strict=True):
        running += count
        if running >= fraction * total:
            return label
    return labels[-1]


def intensity_labels(low: float, high: float, bins: int) -> list[str]:
    width = (high - low) / bins
    return [f"{low + i * width:g} to {low + (i + 1) * width:g}" for i in range(bins)]


def _intensity(figures: dict[str, Any]) -> str:
    parts = []
    for modality, found in figures.items():
        low, high = found["range"]
        labels = intensity_labels(low, high, len(found["hist"]))
        median = quantile_bin(found["hist"], labels, 0.5)
        if median is None:
            parts.append(f"{modality}: withheld")
            continue
        first, last = quantile_bin(found["hist"], labels, 0.05), quantile_bin(found["hist"], labels, 0.95)
        parts.append(
            f"{modality}: median in [{median}], 5-95% from [{first}] to [{last}]; outside {low:g}..{high:g}: "
            f"{_count(found['below'])} below, {_count(found['above'])} above"
        )
    return "; ".join(parts) or "none"


def side_by_side(statistics: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows ``{"figure": words, "sites": {site: words}}``; a failed site's column says why."""
    settings = statistics["settings"]
    spacing_labels = bin_labels(tuple(settings["spacing_edges_mm"]))
    shape_labels = bin_labels(tuple(settings["shape_edges"]))
    lesion_labels = bin_labels(tuple(settings["lesion_edges_ml"]))
    rows: list[tuple[str, Any]] = [
        ("training cases", lambda s: _count(s["cases"]["train"])),
        ("validation cases", lambda s: _count(s["cases"]["val"])),
        ("modality (cases)", lambda s: counted(s["modality"])),
        ("orientation (cases)", lambda s: counted(s["orientation"])),
    ]
    for axis in AXES:
        rows.append(
            (f"spacing {axis}, mm (cases)", lambda s, a=axis: occupied_bins(s["spacing_mm"][a], spacing_labels))
        )
    for axis in AXES:
        rows.append((f"size {axis}, voxels (cases)", lambda s, a=axis: occupied_bins(s["shape"][a], shape_labels)))
    rows += [
        ("intensity, raw units", lambda s: _intensity(s["intensity"])),
        ("lesions", lambda s: _count(s["lesions"])),
        ("lesion volume, mL (lesions)", lambda s: occupied_bins(s["lesion_volume_ml"], lesion_labels)),
        ("median lesion volume, mL", lambda s: quantile_bin(s["lesion_volume_ml"], lesion_labels, 0.5) or "withheld"),
    ]
    sites, failures = statistics["sites"], statistics.get("failures", {})
    return [
        {
            "figure": figure,
            "sites": {
                **{name: describe(found) for name, found in sorted(sites.items())},
                **{name: f"failed: {why}" for name, why in sorted(failures.items())},
            },
        }
        for figure, describe in rows
    ]
