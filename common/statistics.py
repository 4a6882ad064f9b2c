"""The closed vocabulary of a site's data statistics, shared by the site, its egress guard and the coordinator.

A statistics reply is one flat record of integer counts, each under a name from this vocabulary
(the egress guard lets nothing else out, :mod:`client.egress`)::

    stats.cases.train / stats.cases.val                 cases in the site's index, by split
    stats.modality.<MODALITY>                           cases per DICOM modality (or other/unknown)
    stats.orientation.<CODES>                           cases per orientation (nibabel axis codes, RAS...)
    stats.spacing.<x|y|z>.hist.NN                       cases per voxel-spacing bin (mm), per axis
    stats.shape.<x|y|z>.hist.NN                         cases per volume-size bin (voxels), per axis
    stats.intensity.<MODALITY>.hist.NN                  voxels per raw-unit bin, pooled over the cases
    stats.intensity.<MODALITY>.below / .above           voxels outside the modality's fixed range
    stats.lesions                                       lesions (connected label components)
    stats.lesion_volume.hist.NN                         lesions per volume bin (mL)

Bin NN (two digits, from 00) of edges e is: NN = 00 below e[0], e[i-1] <= v < e[i], and the last
bin at or above e[-1]; intensity bins split the modality's range evenly. A count the site withholds
is sent as :data:`WITHHELD`, so the coordinator can tell "withheld" from zero.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from typing import Any

from common.settings import StatsSettings

PREFIX = "stats."
RECORD = "stats"  # the name of the reply's MetricRecord
ACTION = "stats"  # the ClientApp's query action: a request is a Flower message of type "query.stats"
QUERY = f"query.{ACTION}"
WITHHELD = -1
AXES = ("x", "y", "z")
MODALITIES = ("CT", "MR", "PT", "NM", "US", "CR", "DX", "MG", "XA", "other", "unknown")
ORIENTATIONS = tuple(
    "".join(pair[sign] for pair, sign in zip(order, signs, strict=True))
    for order in itertools.permutations((("L", "R"), ("P", "A"), ("I", "S")))
    for signs in itertools.product((0, 1), repeat=3)
)
_MODALITY = "|".join(MODALITIES)
_NAME = re.compile(
    r"stats\.(?:cases\.(?:train|val)|lesions|lesion_volume\.hist\.\d\d"
    rf"|modality\.(?:{_MODALITY})|orientation\.[LRAPSI]{{3}}"
    r"|(?:spacing|shape)\.[xyz]\.hist\.\d\d"
    rf"|intensity\.(?:{_MODALITY})\.(?:hist\.\d\d|below|above))"
)


def modality_name(modality: str) -> str:
    """The vocabulary's name for a case's modality: a known DICOM modality, 'other' or 'unknown'."""
    return modality if modality in MODALITIES else "other"


def hist_name(kind: str, index: int) -> str:
    return f"{PREFIX}{kind}.hist.{index:02d}"


def is_statistic(name: str) -> bool:
    """Whether ``name`` belongs to the vocabulary (orientation codes checked against the 48 real ones)."""
    if not _NAME.fullmatch(name):
        return False
    return not name.startswith(PREFIX + "orientation.") or name.rsplit(".", 1)[1] in ORIENTATIONS


def release(count: int, min_count: int) -> int:
    """``count`` as it may leave: zero and counts of at least ``min_count`` as they are, else withheld."""
    return count if count == 0 or count >= min_count else WITHHELD


def _figure(value: int) -> int | None:
    return None if value == WITHHELD else value


def _histogram(values: Mapping[str, int], kind: str, bins: int) -> list[int | None]:
    return [_figure(values.get(hist_name(kind, index), 0)) for index in range(bins)]


def decode(values: Mapping[str, int], settings: StatsSettings) -> dict[str, Any]:
    """A site's flat record as nested figures (None where withheld), in the bins of ``settings``."""

    def counted(group: str) -> dict[str, int | None]:
        head = f"{PREFIX}{group}."
        return {name.removeprefix(head): _figure(v) for name, v in sorted(values.items()) if name.startswith(head)}

    intensity = {}
    for modality in sorted({name.split(".")[2] for name in values if name.startswith(PREFIX + "intensity.")}):
        kind = f"intensity.{modality}"
        intensity[modality] = {
            "range": list(settings.intensity_range(modality)),
            "hist": _histogram(values, kind, settings.intensity_bins),
            "below": _figure(values.get(f"{PREFIX}{kind}.below", 0)),
            "above": _figure(values.get(f"{PREFIX}{kind}.above", 0)),
        }
    return {
        "cases": {split: _figure(values.get(f"{PREFIX}cases.{split}", 0)) for split in ("train", "val")},
        "modality": counted("modality"),
        "orientation": counted("orientation"),
        "spacing_mm": {
            axis: _histogram(values, f"spacing.{axis}", len(settings.spacing_edges_mm) + 1) for axis in AXES
        },
        "shape": {axis: _histogram(values, f"shape.{axis}", len(settings.shape_edges) + 1) for axis in AXES},
        "intensity": intensity,
        "lesions": _figure(values.get(f"{PREFIX}lesions", 0)),
        "lesion_volume_ml": _histogram(values, "lesion_volume", len(settings.lesion_edges_ml) + 1),
    }


def bin_labels(edges: tuple[float, ...]) -> list[str]:
    """Readable names of the bins of ``edges``: '<0.5', '0.5-0.75', ..., '>=5'."""
    inner = [f"{low:g}-{high:g}" for low, high in itertools.pairwise(edges)]
    return [f"<{edges[0]:g}", *inner, f">={edges[-1]:g}"]
