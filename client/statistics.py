"""A site's data statistics, computed from its cases and reduced to counts that may leave.

The coordinator asks every site for them before any training (``insite coord stats``), so that a
site whose scans differ from the others' is seen first. They are computed here from the site's
own files, in the ClientApp when the coordinator asks and in ``insite site stats --dry-run``,
which shows the administrator the very record the egress guard would be handed.

What is computed per case (spacing, size, orientation, voxel intensities, lesion volumes) only
ever lands in a bin of fixed edges (:class:`common.settings.StatsSettings`) and is summed over the
site's cases; no per-case value, minimum or maximum is kept. Then :func:`common.statistics.release`
withholds every count from 1 to ``min_count - 1``, and a site with fewer than ``min_count`` cases
withholds every figure but its case counts.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import cast

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from flwr.app import ConfigRecord, MetricRecord, MetricRecordValues, RecordDict
from nibabel.spatialimages import SpatialImage

from client.cases import Case, discover_cases
from common.errors import SiteDataError
from common.settings import StatsSettings
from common.statistics import AXES, PREFIX, RECORD, WITHHELD, hist_name, modality_name, release

log = logging.getLogger(__name__)


def _bin(value: float, edges: tuple[float, ...]) -> int:
    """Bin index of ``value``: 0 below edges[0], i for edges[i-1] <= value < edges[i], len(edges) above."""
    return int(np.digitize(value, edges))


def _load(site: str, path: Path) -> SpatialImage:
    try:
        # cast: nib.load is typed as returning the FileBasedImage base; a NIfTI volume is a SpatialImage
        return cast(SpatialImage, nib.load(path))
    except Exception as error:  # nibabel raises several types for damaged files
        raise SiteDataError(f"site {site}: cannot read {path} ({error})") from None


def lesion_volumes_ml(label: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Volume in mL of each lesion: each connected component (26-neighbourhood) of label > 0."""
    components = sitk.GetArrayFromImage(
        sitk.ConnectedComponent(sitk.GetImageFromArray((label > 0).astype(np.uint8)), True)
    )
    voxels = np.bincount(components.ravel())[1:]
    return voxels[voxels > 0] * abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0


def case_counts(site: str, case: Case, settings: StatsSettings) -> Counter[str]:
    """One case's contribution to the site's counts (never sent by itself)."""
    image = _load(site, case.image)
    counts: Counter[str] = Counter()
    modality = modality_name(case.modality)
    counts[f"{PREFIX}modality.{modality}"] += 1
    counts[f"{PREFIX}orientation.{''.join(nib.orientations.aff2axcodes(image.affine))}"] += 1
    for axis, spacing, size in zip(AXES, image.header.get_zooms()[:3], image.shape[:3], strict=True):
        counts[hist_name(f"spacing.{axis}", _bin(float(spacing), settings.spacing_edges_mm))] += 1
        counts[hist_name(f"shape.{axis}", _bin(size, settings.shape_edges))] += 1
    low, high = settings.intensity_range(modality)
    voxels = np.asarray(image.get_fdata(dtype=np.float32))
    histogram, _ = np.histogram(voxels, bins=settings.intensity_bins, range=(low, high))
    kind = f"intensity.{modality}"
    for index, count in enumerate(histogram):
        counts[hist_name(kind, index)] += int(count)
    counts[f"{PREFIX}{kind}.below"] += int((voxels < low).sum())
    counts[f"{PREFIX}{kind}.above"] += int((voxels > high).sum())
    label = _load(site, case.label)
    volumes = lesion_volumes_ml(np.asarray(label.dataobj), label.affine)
    counts[f"{PREFIX}lesions"] += len(volumes)
    for volume in volumes:
        counts[hist_name("lesion_volume", _bin(float(volume), settings.lesion_edges_ml))] += 1
    return counts


def _empty_histograms(settings: StatsSettings) -> dict[str, int]:
    """Every bin of the fixed-size histograms at zero, so an empty bin is sent as zero, not left out."""
    names = [hist_name("lesion_volume", i) for i in range(len(settings.lesion_edges_ml) + 1)]
    for axis in AXES:
        names += [hist_name(f"spacing.{axis}", i) for i in range(len(settings.spacing_edges_mm) + 1)]
        names += [hist_name(f"shape.{axis}", i) for i in range(len(settings.shape_edges) + 1)]
    return dict.fromkeys(names, 0)


def site_statistics(
    site: str, data_path: Path, settings: StatsSettings, progress: Callable[[], None] | None = None
) -> dict[str, int]:
    """The site's statistics as they may leave: name -> count, or :data:`WITHHELD`."""
    cases = discover_cases(site, data_path)
    counts: Counter[str] = Counter(_empty_histograms(settings))
    for case in cases:
        counts.update(case_counts(site, case, settings))
        if progress:
            progress()
    enough = len(cases) >= settings.min_count
    released = {name: release(count, settings.min_count) if enough else WITHHELD for name, count in counts.items()}
    for split in ("train", "val"):
        released[f"{PREFIX}cases.{split}"] = release(sum(c.split == split for c in cases), settings.min_count)
    withheld = sum(value == WITHHELD for value in released.values())
    log.info("site %s: statistics of %d case(s), %d of %d figures withheld", site, len(cases), withheld, len(released))
    return dict(sorted(released.items()))


def statistics_reply(
    site: str, data_path: Path, settings: StatsSettings, progress: Callable[[], None] | None = None
) -> RecordDict:
    """The whole content of the site's reply to a statistics request, as the egress guard is handed it.

    ``insite site stats --dry-run`` prints this very record; the ClientApp sends it.
    """
    values = site_statistics(site, data_path, settings, progress)
    # cast: MetricRecord takes an invariant dict of any metric value, though it only reads (copies) it
    statistics = MetricRecord(cast(dict[str, MetricRecordValues], values))
    return RecordDict({RECORD: statistics, "site": ConfigRecord({"name": site})})
