"""Sites for in-process runs (deploy.in_process): MONAI synthetic spheres, so a run is a few seconds
and its model segments something.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from monai.data.synthetic import create_test_image_3d

from client.cases import Case, write_index

EDGE = 32


def sphere_volume(seed: int, edge: int = EDGE) -> tuple[np.ndarray, np.ndarray]:
    """Raw-unit image (scaled like a scanner would) and its 0/1 label."""
    image, label = create_test_image_3d(
        edge,
        edge,
        edge,
        num_objs=4,
        rad_max=7,
        rad_min=3,
        noise_max=0.1,
        num_seg_classes=1,
        random_state=np.random.RandomState(seed),
    )
    return (image * 1000.0 - 200.0).astype(np.float32), label.astype(np.uint8)


def write_sphere_site(data: Path, first_seed: int, train: int = 3, val: int = 2) -> Path:
    """A site's data folder in the layout ``insite site ingest`` writes (client.cases)."""
    cases = []
    for index in range(train + val):
        image, label = sphere_volume(first_seed + index)
        case_id = f"case-{first_seed + index:03d}"
        paths = {}
        for kind, volume in (("images", image), ("labels", label)):
            paths[kind] = data / kind / f"{case_id}.nii.gz"
            paths[kind].parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(volume, np.eye(4)), paths[kind])
        cases.append(Case(case_id, paths["images"], paths["labels"], "train" if index < train else "val"))
    write_index(data, cases)
    return data
