"""Defacing: seconds per series and how well the face is removed, over random poses of the template.

Each pose is the shipped head template rotated by up to 20 degrees about a random axis, shifted by
up to 15 mm and cropped (deploy/demo/synthetic_heads.py), written as an MR DICOM series and
defaced by ``siteprep.deface`` exactly as ``insite site deface`` does. Reported per pose and as
the worst case: seconds for the series (registration, check, writing, QA picture), the share of
face voxels inside the head that were removed, and the share of the other head voxels changed.

    python -m bench.deface [--poses 8] [--spacing 2.0] [--work /tmp/deface-bench]
"""

from __future__ import annotations

import argparse
import random
import shutil
from pathlib import Path

import numpy as np
from pydicom import dcmread

from deploy.demo.synthetic_dicom import random_patient, write_series
from deploy.demo.synthetic_heads import posed_head
from siteprep.deface.settings import DefaceSettings
from siteprep.deface.tree import deface_tree
from siteprep.series import Series, add_slice, read_volume, stack_slices


def _volume(folder: Path) -> np.ndarray:
    found: dict[str, Series] = {}
    for path in sorted(folder.rglob("*.dcm")):
        add_slice(found, path, dcmread(path, stop_before_pixels=True))
    (series,) = found.values()
    return read_volume(stack_slices(series)[0]).transpose(2, 1, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--poses", type=int, default=8)
    parser.add_argument("--spacing", type=float, default=2.0, help="voxel size of the written series, mm")
    parser.add_argument("--work", type=Path, default=Path("/tmp/deface-bench"))
    arguments = parser.parse_args()
    rows = []
    for seed in range(arguments.poses):
        work = arguments.work / f"pose-{seed}"
        shutil.rmtree(work, ignore_errors=True)
        head = posed_head(np.random.default_rng(1000 + seed), spacing_mm=arguments.spacing)
        write_series(head.volume, work / "src" / "SUBJ" / "study" / "series", random_patient(random.Random(seed)),
                     modality="MR", spacing=head.spacing, origin=head.origin, body_part="HEAD")  # fmt: skip
        report = deface_tree(work / "src", work / "dst", work / "quarantine", work / "qa", DefaceSettings())
        (result,) = report.series
        if result.output_series is None:
            rows.append((seed, head.volume.shape, result.seconds, float("nan"), float("nan"), result.why))
            continue
        before, after = _volume(work / "src"), _volume(work / "dst")
        face, rest = head.face & head.head, head.head & ~head.face
        removed = float(np.mean(after[face] == before.min()))
        changed = float(np.mean(after[rest] != before[rest]))
        rows.append((seed, head.volume.shape, result.seconds, removed, changed, result.outcome.value))
    print(
        f"{'pose':>4} {'slices x rows x cols':>20} {'s/series':>9} {'face removed':>13} {'head changed':>13}  outcome"
    )
    for seed, shape, seconds, removed, changed, outcome in rows:
        size = "x".join(map(str, shape))
        print(f"{seed:>4} {size:>20} {seconds:>9.1f} {removed:>12.2%} {changed:>12.3%}  {outcome}")
    done = [row for row in rows if not np.isnan(row[3])]
    if done:
        print(
            f"mean {np.mean([r[2] for r in done]):.1f} s/series; worst: face removed {min(r[3] for r in done):.2%}, "
            f"head changed {max(r[4] for r in done):.3%}; {len(rows) - len(done)} of {len(rows)} not defaced"
        )


if __name__ == "__main__":
    main()
