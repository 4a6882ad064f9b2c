"""A run directory made by the real round loop and ClientApp, and a real export of it, per session.

The coordinator's ServerApp and each site's ClientApp run unchanged over a stub of Flower's Grid
(tests/harness/grid.py), so the run folder (run record, metrics, checkpoints and what each
checkpoint carries) is what production writes, not what a fixture imagines. The sites train a
small UNet on MONAI synthetic spheres, so that MONAI's bundle runner has something meaningful to
segment.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from flwr.app import Context, RecordDict
from monai.data.synthetic import create_test_image_3d

from client.app import app as client_app
from client.cases import Case, write_index
from common.run_record import RunRecord
from common.settings import (
    AggregationSettings,
    ModelSettings,
    RunSettings,
    TrainingSettings,
    to_run_config,
)
from deploy.demo.publish import demo_publish
from harness.grid import InProcessGrid, SiteNode
from server.app import main as server_main

SITES = ("site-a", "site-b", "site-c")
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


@pytest.fixture(scope="session")
def run_settings() -> RunSettings:
    return RunSettings(
        rounds=2,
        min_sites=len(SITES),
        model=ModelSettings(channels=(4, 8, 16), strides=(2, 2), num_res_units=1),
        training=TrainingSettings(
            patch_size=EDGE, local_steps=10, learning_rate=0.01, lr_schedule="constant", mixed_precision=False
        ),
        aggregation=AggregationSettings(mode="plain"),
    )


@pytest.fixture(scope="session")
def site_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sites")
    return {site: write_sphere_site(root / site / "data", 10 * index) for index, site in enumerate(SITES)}


def make_run(
    run_dir: Path, settings: RunSettings, site_folders: dict[str, Path], sites: tuple[str, ...] = SITES
) -> Path:
    """Run the project's ServerApp over an in-process Grid whose sites run the project's ClientApp."""
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
                    "data-path": str(site_folders[site]),
                    "threads": 1,
                    "cache-path": str(run_dir.parent / "site-caches" / site),
                },
            ),
        )
        for node_id, site in enumerate(sites, start=101)
    ]
    grid = InProcessGrid(client_app, nodes)
    # As 'insite demo' and 'insite coord run' do before they submit the run.
    RunRecord(run_dir).create("demo", settings, transport={"tls": True, "node_auth": True})
    server_main(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config))
    return run_dir


@pytest.fixture(scope="session")
def trained_run(
    tmp_path_factory: pytest.TempPathFactory, run_settings: RunSettings, site_folders: dict[str, Path]
) -> Path:
    """One trained run, made once; tests that change a run folder get a copy (``run_dir``)."""
    return make_run(tmp_path_factory.mktemp("trained") / "run", run_settings, site_folders)


@pytest.fixture
def run_dir(tmp_path: Path, trained_run: Path) -> Path:
    """A private copy of the trained run folder (its record and checkpoints may be changed)."""
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


@pytest.fixture(scope="session")
def published(tmp_path_factory: pytest.TempPathFactory, trained_run: Path):
    """One approved, exported, verified demo publication (treat as read-only; copy to modify)."""
    root = tmp_path_factory.mktemp("published")
    run = Path(shutil.copytree(trained_run, root / "run"))
    result = demo_publish(run, {site: root / "sites" / site / "approval.key" for site in SITES}, root / "pub")
    assert result.published, result
    return result


@pytest.fixture
def export_copy(published, tmp_path: Path) -> Path:
    """A private copy of the published export folder, free to tamper with."""
    target = tmp_path / "export"
    shutil.copytree(published.export, target)
    return target


@pytest.fixture(scope="session")
def sample_volume(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A synthetic NIfTI volume not seen in training, and its true label."""
    folder = tmp_path_factory.mktemp("sample")
    image, label = sphere_volume(seed=99, edge=40)
    nib.save(nib.Nifti1Image(image, np.eye(4)), folder / "case-099.nii.gz")
    return folder, label
