"""Shared fixtures for the de-identification tests: settings with a key outside the output,
and small synthetic series with planted identifiers (real DICOM files, no mocks)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from deploy.demo.synthetic_dicom import PlantedPatient, random_patient, write_series
from siteprep.deid.settings import DeidSettings, ProfileOptions


@pytest.fixture
def make_settings(tmp_path: Path):
    def make(**options) -> DeidSettings:
        return DeidSettings(key_file=tmp_path / "site-secret" / "key.json", options=ProfileOptions(**options))

    return make


@pytest.fixture
def settings(make_settings) -> DeidSettings:
    return make_settings()


def _volume(seed: int, shape=(4, 16, 16)) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 300, shape).astype(np.int16)


@pytest.fixture
def planted_tree(tmp_path: Path) -> tuple[Path, list[PlantedPatient]]:
    """Two patients, the first with two series, under raw/<anything>/."""
    rng = random.Random(7)
    patients = [random_patient(rng), random_patient(rng)]
    source = tmp_path / "raw"
    write_series(_volume(1), source / "a" / "s1", patients[0], series_number=1)
    write_series(_volume(2), source / "a" / "s2", patients[0], series_number=2)
    write_series(_volume(3), source / "b" / "deep" / "er", patients[1], modality="MR")
    return source, patients
