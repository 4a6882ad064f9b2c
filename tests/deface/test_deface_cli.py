"""``insite site deface`` end to end, in process: a small head series in, a defaced one out."""

from __future__ import annotations

import json
import random

import numpy as np

from deploy.demo.synthetic_dicom import random_patient, write_series
from deploy.demo.synthetic_heads import posed_head


def test_deface_cli_end_to_end(insite, tmp_path):
    head = posed_head(np.random.default_rng(21), spacing_mm=4.0)
    source = tmp_path / "deid" / "SUBJ-1" / "study" / "series"
    write_series(
        head.volume,
        source,
        random_patient(random.Random(4)),
        modality="MR",
        spacing=head.spacing,
        origin=head.origin,
        body_part="BRAIN",
    )
    result = insite("site", "deface", tmp_path / "deid", tmp_path / "out", "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert summary["series"] == {"defaced": 1, "not_a_head": 0, "quarantined": 0}
    (line,) = summary["results"]
    written = list((tmp_path / "out" / "SUBJ-1" / "study" / line["output_series"]).glob("*.dcm"))
    assert len(written) == head.volume.shape[0]
    picture = tmp_path / "out-deface-qa" / line["subject"] / f"{line['series']}.png"  # by PatientID (the pseudonym)
    assert line["qa_picture"] == str(picture) and picture.is_file()
    assert json.loads((tmp_path / "out" / summary["report"].split("/")[-1]).read_text())["series"] == summary["series"]


def test_deface_cli_refuses_qa_pictures_inside_the_output(insite, tmp_path):
    (tmp_path / "deid").mkdir()
    result = insite("site", "deface", tmp_path / "deid", tmp_path / "out", "--qa-folder", tmp_path / "out" / "qa")
    result.one_line_error("QA picture folder", "inside the output folder")


def test_deface_cli_missing_source(insite, tmp_path):
    insite("site", "deface", tmp_path / "nowhere", tmp_path / "out").one_line_error("nowhere", "does not exist")
