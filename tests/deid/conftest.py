"""Shared fixtures for the de-identification tests: settings with a key outside the output,
and small synthetic series with planted identifiers (real DICOM files, no mocks).

Every test runs with ``INSITE_DEID_PASSPHRASE`` set, as a script at a site would, and makes new
key files at scrypt's lowest accepted cost (N=2^14 instead of 2^17): still real scrypt and
AES-GCM, a few hundred milliseconds less per new key on the shared test machine.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from deploy.demo.synthetic_dicom import PlantedPatient, random_patient, write_series
from siteprep.deid import keyfile
from siteprep.deid.keyfile import Passphrase, ScryptCost
from siteprep.deid.keys import open_site_key
from siteprep.deid.passphrase import ENV_VAR
from siteprep.deid.settings import DeidSettings, ProfileOptions

PASSPHRASE = "correct horse battery staple"
SITE = "site-a"


@pytest.fixture(autouse=True, scope="module")
def unlocked():
    """The key's passphrase in the environment; new keys at the lowest scrypt cost a reader accepts.

    Module-scoped, so that module-scoped fixtures (a shared run) are unlocked too.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ENV_VAR, PASSPHRASE)
        patch.setattr(keyfile, "NEW_KEY_COST", ScryptCost(n=2**14, r=8, p=1))
        yield


@pytest.fixture
def passphrase() -> str:
    """The passphrase ``INSITE_DEID_PASSPHRASE`` holds in these tests."""
    return PASSPHRASE


@pytest.fixture
def key_patients():
    """``key_patients(settings)``: the patients of the key file ``settings`` name, by subject code,
    decrypted in memory (``date_offset_days``, ``original``)."""

    def read(settings: DeidSettings, passphrase: str = PASSPHRASE) -> dict[str, dict]:
        return open_site_key(settings, persist=False, passphrase=Passphrase(passphrase, "the test")).patients()

    return read


@pytest.fixture
def make_settings(tmp_path: Path):
    def make(**options) -> DeidSettings:
        return DeidSettings(site=SITE, key_file=tmp_path / "site-secret" / "key.enc", options=ProfileOptions(**options))

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
