"""A run directory made by the real round loop and ClientApp, and a real export of it, per session.

The coordinator's ServerApp and each site's ClientApp run unchanged over a stub of Flower's Grid
(deploy/in_process/grid.py), so the run folder (run record, metrics, checkpoints and what each
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

from common.settings import AggregationSettings, ModelSettings, RunSettings, TrainingSettings
from deploy.demo.publish import demo_publish
from deploy.in_process.federation import run_in_process, site_grid
from harness.federation import EDGE, sphere_volume, write_sphere_site

SITES = ("site-a", "site-b", "site-c")


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


def make_run(run_dir: Path, settings: RunSettings, site_folders: dict[str, Path]) -> Path:
    """Run the project's ServerApp over an in-process Grid whose sites run the project's ClientApp."""
    run_in_process(run_dir, settings, site_grid(run_dir, settings, site_folders))
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
