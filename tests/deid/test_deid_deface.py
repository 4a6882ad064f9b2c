"""``[deid.deface] enabled``: ``insite site deid`` defaces the head series it writes, before they reach DST."""

from __future__ import annotations

import random

import numpy as np
from pydicom import dcmread

from deploy.demo.synthetic_dicom import random_patient, write_series
from deploy.demo.synthetic_heads import posed_head
from siteprep.deface.settings import DefaceSettings
from siteprep.deid.run import deidentify_tree


def test_deid_defaces_head_series_on_the_way(make_settings, tmp_path):
    raw = tmp_path / "raw"
    patient = random_patient(random.Random(9))
    head = posed_head(np.random.default_rng(31), spacing_mm=4.0)
    write_series(head.volume, raw / "head", patient, modality="MR", spacing=head.spacing, origin=head.origin,
                 body_part="HEAD", series_number=1)  # fmt: skip
    chest = np.random.default_rng(2).normal(0, 300, (3, 16, 16)).astype(np.int16)
    write_series(chest, raw / "chest", patient, body_part="CHEST", series_number=2)
    settings = make_settings().model_copy(update={"deface": DefaceSettings(enabled=True)})
    destination = tmp_path / "deid"
    report = deidentify_tree(settings, raw, destination, tmp_path / "quarantine").as_dict()

    assert report["deface"]["series"] == {"defaced": 1, "not_a_head": 1, "quarantined": 0}
    files = report["files"]  # (deid itself quarantines blank slices: low intensity variance)
    assert files["written"] == files["in"] - files["quarantined"] == len(list(destination.rglob("*.dcm")))
    assert report["residual_scan"]["files_scanned"] == files["written"]
    assert report["residual_scan"]["files_with_residuals"] == 0
    by_part: dict[str, set[str]] = {}
    for path in destination.rglob("*.dcm"):
        dataset = dcmread(path, stop_before_pixels=True)
        by_part.setdefault(str(dataset.BodyPartExamined), set()).add(str(dataset.ImageType[0]))
        if dataset.BodyPartExamined == "HEAD":
            assert "113102" in {item.CodeValue for item in dataset.DeidentificationMethodCodeSequence}
    assert by_part == {"HEAD": {"DERIVED"}, "CHEST": {"ORIGINAL"}}  # no undefaced head in DST
    assert not [p for p in tmp_path.iterdir() if "pending" in p.name]  # the pending folder is gone
    assert (tmp_path / "deid-deface-qa").is_dir()
