"""A whole run of the project's ServerApp and ClientApp in this process, over the stub Grid.

Sites train a small UNet on MONAI synthetic spheres (``write_sphere_site``), so a run is a few
seconds and its model segments something; faults are the grid's (see harness.grid).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from flwr.app import Context, RecordDict
from monai.data.synthetic import create_test_image_3d

from client.app import app as client_app
from client.cases import Case, write_index
from common.run_record import RunRecord
from common.settings import RunSettings, to_run_config
from harness.grid import InProcessGrid, SiteNode
from server.app import main as server_main

EDGE = 32
FIRST_NODE_ID = 101


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


def site_grid(run_dir: Path, settings: RunSettings, site_folders: dict[str, Path], **faults: Any) -> InProcessGrid:
    """The stub Grid with one node per site (ids from 101, in ``site_folders`` order)."""
    run_config = to_run_config(settings, run_dir)
    nodes = [
        SiteNode(
            node_id,
            site,
            Context(
                run_id=1,
                node_id=node_id,
                state=RecordDict(),
                run_config=run_config,
                node_config={
                    "site-name": site,
                    "data-path": str(folder),
                    "threads": 1,
                    "cache-path": str(run_dir.parent / "site-caches" / site),
                },
            ),
        )
        for node_id, (site, folder) in enumerate(site_folders.items(), start=FIRST_NODE_ID)
    ]
    return InProcessGrid(client_app, nodes, **faults)


def run_in_process(
    run_dir: Path,
    settings: RunSettings,
    grid: InProcessGrid,
    round_offset: int = 0,
    initial_weights: Path | None = None,
) -> RunRecord:
    """The project's ServerApp over ``grid``, as 'insite coord run' would start it."""
    record = RunRecord(run_dir)
    if not (run_dir / "run.json").exists():  # as 'insite demo' / 'insite coord run' do before submitting
        record.create("demo", settings, transport={"tls": True, "node_auth": True})
    run_config = to_run_config(settings, run_dir, round_offset, initial_weights)
    server_main(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config))
    return record


def evaluate_in_process(run_dir: Path, settings: RunSettings, grid: InProcessGrid) -> RunRecord:
    """The ServerApp's evaluation task over ``grid``, on a run folder 'insite coord evaluate' prepared."""
    run_config = to_run_config(settings.model_copy(update={"task": "evaluate"}), run_dir)
    server_main(grid, Context(run_id=2, node_id=0, node_config={}, state=RecordDict(), run_config=run_config))
    return RunRecord(run_dir)
