"""De-identification in worker processes gives a sequential run's outcome: the same files byte for
byte, the same report and quarantine, one pseudonym per patient created by the run's own key; a
worker that dies ends the run without leaving staged files behind."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from siteprep.deid.errors import DeidError
from siteprep.deid.job import FileJob
from siteprep.deid.run import deidentify_tree


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _comparable(report) -> dict:
    data = report.as_dict()
    for volatile in ("finished", "seconds", "files_per_second"):
        data.pop(volatile)
    return data


@pytest.fixture
def mixed_tree(planted_tree) -> Path:
    """The planted series plus files each run must refuse, and one SOP instance twice."""
    source, _ = planted_tree
    (source / "notes.txt").write_text("Patient Kowalski, MRN 123456\n")
    shutil.copyfile(get_testdata_file("MR_small.dcm"), source / "mr.dcm")
    shutil.copyfile(get_testdata_file("MR_small_RLE.dcm"), source / "mr_again.dcm")  # same SOP instance
    shutil.copyfile(get_testdata_file("US1_J2KR.dcm"), source / "us.dcm")
    return source


def test_workers_write_what_one_process_writes(tmp_path, settings, mixed_tree, key_patients):
    one = deidentify_tree(settings.model_copy(update={"workers": 1}), mixed_tree, tmp_path / "one", tmp_path / "q1")
    key_after_one = key_patients(settings)
    three = deidentify_tree(settings.model_copy(update={"workers": 3}), mixed_tree, tmp_path / "three", tmp_path / "q3")
    assert _tree(tmp_path / "one") == _tree(tmp_path / "three") and one.written >= 2 and one.duplicates == 1
    assert _tree(tmp_path / "q1") == _tree(tmp_path / "q3") and sum(one.quarantined.values()) == 2
    assert _comparable(one) == _comparable(three)
    assert key_patients(settings) == key_after_one  # nothing new for known patients
    assert three.residual_scan.files_with_residuals == 0


def test_workers_agree_on_new_patients(tmp_path, settings, planted_tree, key_patients):
    source, patients = planted_tree
    report = deidentify_tree(settings.model_copy(update={"workers": 2}), source, tmp_path / "out", tmp_path / "q")
    ids_by_folder: dict[str, set[str]] = {}
    for path in (tmp_path / "out").rglob("*.dcm"):
        folder = path.relative_to(tmp_path / "out").parts[0]
        ids_by_folder.setdefault(folder, set()).add(str(dcmread(path).PatientID))
    assert len(ids_by_folder) == len(patients) == len(report.subjects)
    assert all(ids == {folder} for folder, ids in ids_by_folder.items())
    assert sorted(key_patients(settings)) == sorted(ids_by_folder)
    assert not list((tmp_path / "out").rglob("*.tmp")) and not list((tmp_path / "out").glob(".staging-*"))


def test_a_dead_worker_ends_the_run_and_leaves_no_staged_file(tmp_path, settings, planted_tree, monkeypatch):
    source, _ = planted_tree
    victim = sorted(p for p in source.rglob("*") if p.is_file())[3]
    run = FileJob.run

    def dies_on_victim(self, index, path):
        if path == victim:
            os._exit(1)
        return run(self, index, path)

    monkeypatch.setattr(FileJob, "run", dies_on_victim)  # the workers are forked from here
    with pytest.raises(DeidError, match="worker died on one of"):
        deidentify_tree(settings.model_copy(update={"workers": 2}), source, tmp_path / "out", tmp_path / "q")
    assert not list((tmp_path / "out").rglob("*.tmp")) and not list((tmp_path / "out").glob(".staging-*"))
    monkeypatch.undo()
    again = deidentify_tree(settings.model_copy(update={"workers": 2}), source, tmp_path / "out2", tmp_path / "q2")
    assert again.written == len(list(source.rglob("*.dcm")))  # the key's lock went with the failed run
