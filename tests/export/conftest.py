"""A real run directory with briefly trained weights, and a real export of it, shared per session.

The run is built with the coordinator's own run-record and checkpoint code; the weights are a small
UNet trained for a few seconds on MONAI synthetic spheres, so that MONAI's bundle runner has
something meaningful to segment.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data.synthetic import create_test_image_3d
from monai.losses import DiceCELoss

from common.model import build_model
from common.run_record import RunRecord, save_checkpoint
from common.settings import ModelSettings, RunSettings, TrainingSettings
from deploy.demo.publish import demo_publish

SITES = ("site-a", "site-b", "site-c")
TRANSPORT = {"tls": True, "node_auth": True, "secure_aggregation": False, "dp_epsilon": None}
EDGE = 32


def sphere_volume(seed: int, edge: int = EDGE) -> tuple[np.ndarray, np.ndarray]:
    """Raw-unit image (scaled like a scanner would) and its 0/1 label."""
    image, label = create_test_image_3d(edge, edge, edge, num_objs=4, rad_max=7, rad_min=3,
                                        noise_max=0.1, num_seg_classes=1, random_state=np.random.RandomState(seed))
    return (image * 1000.0 - 200.0).astype(np.float32), label.astype(np.uint8)


def _normalise(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy((image - image.mean()) / image.std())


def _train(settings: RunSettings) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model(settings.model)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss = DiceCELoss(to_onehot_y=True, softmax=True)
    volumes = [sphere_volume(seed) for seed in range(2)]
    images = torch.stack([_normalise(image)[None] for image, _ in volumes])
    labels = torch.stack([torch.from_numpy(label)[None].long() for _, label in volumes])
    model.train()
    for _ in range(15):
        optimiser.zero_grad()
        loss(model(images), labels).backward()
        optimiser.step()
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


@pytest.fixture(scope="session")
def run_settings() -> RunSettings:
    return RunSettings(rounds=2, model=ModelSettings(channels=(4, 8, 16), strides=(2, 2), num_res_units=1),
                       training=TrainingSettings(patch_size=EDGE))


@pytest.fixture(scope="session")
def trained_weights(run_settings: RunSettings) -> dict[str, torch.Tensor]:
    return _train(run_settings)


def make_run(run_dir: Path, settings: RunSettings, weights: dict[str, torch.Tensor],
             sites: tuple[str, ...] = SITES) -> Path:
    record = RunRecord(run_dir)
    record.create("demo", settings, TRANSPORT)
    for round_number in (1, 2):
        row = {"round": round_number, "global_dice": 0.6 + round_number / 10, "sites": {
            site: {"dice": 0.5 + round_number / 10 + index / 20, "num_val": 2, "num_train": 8}
            for index, site in enumerate(sites)}}
        record.append_round(row)  # as server.rounds does: the checkpoint carries its round's row
        save_checkpoint(run_dir, round_number, weights, row, settings)
    return run_dir


@pytest.fixture
def run_dir(tmp_path: Path, run_settings: RunSettings, trained_weights: dict[str, torch.Tensor]) -> Path:
    return make_run(tmp_path / "run", run_settings, trained_weights)


@pytest.fixture(scope="session")
def published(tmp_path_factory: pytest.TempPathFactory, run_settings: RunSettings,
              trained_weights: dict[str, torch.Tensor]):
    """One approved, exported, verified demo publication (treat as read-only; copy to modify)."""
    root = tmp_path_factory.mktemp("published")
    run = make_run(root / "run", run_settings, trained_weights)
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
