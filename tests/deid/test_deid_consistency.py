"""The same patient across two runs and two folders gets the same pseudonym, date offset and
UIDs; different patients differ; another site's secret gives unrelated results."""

from __future__ import annotations

import shutil

from pydicom import dcmread

from siteprep.deid.run import deidentify_tree
from siteprep.deid.settings import DeidSettings


def _summary(folder):
    rows = {}
    for path in folder.rglob("*.dcm"):
        ds = dcmread(path)
        rows[str(ds.SOPInstanceUID)] = (
            str(ds.PatientID),
            str(ds.StudyDate),
            str(ds.StudyInstanceUID),
            str(ds.SeriesInstanceUID),
            str(ds.FrameOfReferenceUID),
        )
    return rows


def test_two_runs_two_folders_agree(tmp_path, settings, planted_tree):
    source, _ = planted_tree
    # run 1 sees patient A only, run 2 sees a copy of everything in another folder
    first = tmp_path / "first"
    shutil.copytree(source / "a", first / "a")
    deidentify_tree(settings, first, tmp_path / "out1", tmp_path / "q1")
    second = tmp_path / "second" / "renamed"
    shutil.copytree(source, second)
    deidentify_tree(settings, second.parent, tmp_path / "out2", tmp_path / "q2")
    one, two = _summary(tmp_path / "out1"), _summary(tmp_path / "out2")
    assert one and set(one) < set(two)
    for uid, row in one.items():
        assert two[uid] == row
    subjects = {row[0] for row in two.values()}
    assert len(subjects) == 2
    by_subject = {}
    for row in two.values():
        by_subject.setdefault(row[0], set()).add(row[1])
    dates = [next(iter(d)) for d in by_subject.values()]
    assert len(set(dates)) == 2  # different patients, different (shifted) study dates


def test_other_site_secret_gives_unrelated_pseudonyms(tmp_path, settings, planted_tree):
    source, _ = planted_tree
    deidentify_tree(settings, source, tmp_path / "out1", tmp_path / "q1")
    other = DeidSettings(site="site-b", key_file=tmp_path / "other-site" / "key.enc")
    deidentify_tree(other, source, tmp_path / "out2", tmp_path / "q2")
    one, two = _summary(tmp_path / "out1"), _summary(tmp_path / "out2")
    assert not set(one) & set(two)
    assert not {r[0] for r in one.values()} & {r[0] for r in two.values()}
