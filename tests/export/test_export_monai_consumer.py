"""MONAI itself consumes the exported bundle: its own CLI, in subprocesses, offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

SCHEMA = Path(__file__).resolve().parents[3] / "shared" / "reference" / "monai-bundle-meta-schema-20240725.json"


def monai_bundle(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def test_verify_metadata_against_the_reference_schema_offline(published):
    assert SCHEMA.is_file()
    done = monai_bundle(
        "verify_metadata", "--meta_file", "configs/metadata.json", "--filepath", str(SCHEMA), cwd=published.bundle
    )
    assert "metadata is verified with no error" in done.stdout + done.stderr


def test_verify_net_in_out(published):
    done = monai_bundle(
        "verify_net_in_out",
        "network_def",
        "--meta_file",
        "configs/metadata.json",
        "--config_file",
        "configs/inference.json",
        "--device",
        "cpu",
        cwd=published.bundle,
    )
    assert "data shape of network is verified with no error" in done.stdout + done.stderr


def test_run_segments_a_synthetic_volume(published, sample_volume, tmp_path):
    folder, truth = sample_volume
    out = tmp_path / "labels"
    monai_bundle(
        "run",
        "--config_file",
        "configs/inference.json",
        "--meta_file",
        "configs/metadata.json",
        "--bundle_root",
        ".",
        "--dataset_dir",
        str(folder),
        "--output_dir",
        str(out),
        cwd=published.bundle,
    )
    written = sorted(out.glob("*.nii.gz"))
    assert [p.name for p in written] == ["case-099_seg.nii.gz"]
    label = np.asarray(nib.load(written[0]).dataobj)
    assert label.shape == truth.shape and set(np.unique(label)) <= {0, 1}
    overlap = np.logical_and(label == 1, truth == 1).sum()
    dice = 2 * overlap / ((label == 1).sum() + (truth == 1).sum())
    assert dice > 0.7, f"exported weights segment poorly: Dice {dice:.3f}"
