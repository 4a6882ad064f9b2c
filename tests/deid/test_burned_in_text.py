"""OCR redaction of burned-in text (issue 17.2), on real DICOM written the way scanners write it.

Names, IDs and dates are rendered into US and Secondary Capture objects (several fonts and sizes,
on speckle, in corners and over the anatomy, 8- and 16-bit grey, RGB, JPEG baseline, a cine) and
the objects go through ``deidentify_tree`` with redaction on; then tesseract, run again here on
the written files, must read none of the text, the pixels outside the text must be unchanged bit
for bit, and objects whose text cannot be removed stay quarantined, saying why.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import typer
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, VLPhotographicImageStorage
from typer.testing import CliRunner

from deploy.demo.burned_in_annotation import (
    FONTS,
    Annotated,
    Label,
    Region,
    found,
    label_box,
    label_lines,
    planted_words,
    read_plainly,
    write_annotated,
)
from deploy.demo.synthetic_dicom import random_patient
from insite.cli import site_data
from siteprep.deid.burned_in_text import TESSERACT_HINT, Box, DisplayRendering, Word, read_words, tesseract_path
from siteprep.deid.keys import open_site_key
from siteprep.deid.pixels import decoded_frames
from siteprep.deid.reasons import Reason
from siteprep.deid.run import deidentify_tree
from siteprep.deid.settings import SHIPPED_PROFILE, BurnedInText, DeidSettings, PixelSafety, load_deid_settings
from siteprep.deid.text_policy import TextPolicy
from siteprep.deid.text_redaction import frames_to_read, frames_to_verify, redaction_applies

needs_tesseract = pytest.mark.skipif(tesseract_path() is None, reason=f"tesseract not installed; {TESSERACT_HINT}")
ROWS, COLUMNS = 256, 320
REGION = Region(top=48, left=16, bottom=247, right=303)
ON = PixelSafety(burned_in_text=BurnedInText(enabled=True))
YELLOW, CYAN, GREEN = (255, 255, 0), (0, 255, 255), (0, 255, 0)


def _screen(lines: list[str], colours=((255, 255, 255),) * 4) -> list[Label]:
    """Name and ID in the top corners, birth date bottom left, study date over the anatomy."""
    name, patient_id, birth, study = lines
    return [
        Label(name, 6, 6, 18, FONTS[0], colours[0]),
        Label(patient_id, 8, 180, 15, FONTS[1], colours[1]),
        Label(birth, 234, 6, 14, FONTS[2], colours[2]),
        Label(study, 120, 100, 22, FONTS[0], colours[3]),
    ]


@pytest.fixture(scope="module")
def cleaned(tmp_path_factory):
    """One run with redaction on over every kind of object; (root, settings, report, {name: (object, patient)})."""
    root = tmp_path_factory.mktemp("burned")
    rng = random.Random(17)
    objects: dict[str, tuple[Annotated, list[str]]] = {}

    def add(name: str, frame_labels, **options) -> None:
        patient = random_patient(rng)
        lines = label_lines(patient)
        labels = [[Label(**{**vars(label), "text": lines[i % 4]}) for i, label in enumerate(f)] for f in frame_labels]
        objects[name] = (write_annotated(root / "raw" / f"{name}.dcm", patient, labels, **options), lines)

    screen = _screen(["", "", "", ""])
    add("grey8", [screen], kind="grey8", modality="SC", rows=ROWS, columns=COLUMNS, seed=1)
    other_fonts = [Label(**{**vars(label), "font": FONTS[(i + 1) % 3]}) for i, label in enumerate(screen)]
    add("grey16", [other_fonts], kind="grey16", modality="SC", rows=ROWS, columns=COLUMNS, seed=2)
    # a colour ultrasound screen exported as JPEG (colour captures of other modalities stay quarantined)
    add("jpeg", [_screen(["", "", "", ""], (YELLOW, CYAN, GREEN, YELLOW))], kind="rgb-jpeg", modality="US", seed=3)
    us_labels = [
        Label("", 8, 8, 18, FONTS[0], YELLOW),
        Label("", 10, 190, 14, FONTS[1], GREEN),
        Label("", 200, 30, 16, FONTS[2], CYAN),  # inside the region, below the organs
        Label("", 130, 90, 20, FONTS[0], CYAN),  # over the anatomy
    ]
    add("us", [us_labels], kind="rgb", regions=[REGION], rows=ROWS, columns=COLUMNS, seed=4)
    cine = [Label("", 4, 4, 16, FONTS[0]), Label("", 136, 60, 16, FONTS[2])]
    add("cine", [cine] * 7, kind="grey8", rows=160, columns=200, seed=5)
    # text only in frames 3 and 5, which the 5 frames read (0, 2, 4, 6, 8) skip: verification reads them
    moving = [[] if i not in (3, 5) else [Label("", 20 * i, 10, 18, FONTS[0])] for i in range(9)]
    add("moving", moving, kind="grey8", rows=160, columns=200, seed=6)
    page = [Label("", 8 + 24 * i, 6, 20, FONTS[i % 3]) for i in range(10)]  # a scanned form: text everywhere
    add("document", [page], kind="grey8", modality="SC", rows=ROWS, columns=COLUMNS, seed=7)

    settings = DeidSettings(site="site-a", key_file=root / "key.enc", pixels=ON)
    report = deidentify_tree(settings, root / "raw", root / "out", root / "quarantine")
    return root, settings, report, objects


def _written(root: Path, settings: DeidSettings, source: Path) -> Dataset:
    key = open_site_key(settings, persist=False)
    uid = key.uid(str(dcmread(source).SOPInstanceUID))
    (path,) = (root / "out").rglob(f"{uid}.dcm")
    return dcmread(path)


def _quarantine_reasons(root: Path) -> dict[str, dict]:
    return {
        Path(entry["source"]).stem: entry
        for entry in (json.loads(p.read_text()) for p in (root / "quarantine").glob("*.reason.json"))
    }


CLEANED = ["grey8", "grey16", "jpeg", "us", "cine"]


@needs_tesseract
@pytest.mark.parametrize("name", CLEANED)
def test_text_is_gone_and_ocr_reads_none_of_it(cleaned, name):
    root, settings, _, objects = cleaned
    annotated, lines = objects[name]
    original = dcmread(annotated.path)
    pieces = planted_words(lines)
    assert found(read_plainly(original), pieces), "the second reader must see the text before cleaning"
    written = _written(root, settings, annotated.path)
    assert not found(read_plainly(written), pieces)
    # the pipeline's own reader, on every written frame, shown on the original's display scale
    rendering = DisplayRendering(original, decoded_frames(original), 0)
    policy = TextPolicy(BurnedInText(), lines)
    assert not [w for frame in decoded_frames(written) for w in read_words(rendering.page(frame)) if policy.remains(w)]
    assert written.BurnedInAnnotation == "NO"
    assert "113101" in {item.CodeValue for item in written.DeidentificationMethodCodeSequence}
    assert written.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


@needs_tesseract
@pytest.mark.parametrize("name", CLEANED)
def test_text_is_filled_and_everything_else_is_unchanged(cleaned, name):
    root, settings, _, objects = cleaned
    annotated, _ = objects[name]
    before = decoded_frames(dcmread(annotated.path))
    after = decoded_frames(_written(root, settings, annotated.path))
    changed = (before != after).reshape(*before.shape[:3], -1).any(axis=-1).any(axis=0)
    may_change = np.zeros(changed.shape, dtype=bool)
    margin = BurnedInText().padding + 2  # tesseract's boxes may reach a pixel or two past the ink
    for label in annotated.labels:
        top, left, bottom, right = label_box(label)
        may_change[max(0, top - margin) : bottom + margin, max(0, left - margin) : right + margin] = True
    if name == "us":
        outside = np.ones(changed.shape, dtype=bool)
        outside[REGION.top : REGION.bottom + 1, REGION.left : REGION.right + 1] = False
        assert not after[:, outside].any(), "outside the ultrasound regions every pixel is blanked"
        may_change |= outside
    assert not (changed & ~may_change).any(), "pixels away from the text changed"
    black = after.min()
    assert (after[:, annotated.text] == black).all(), "every pixel the text covered is filled"


@needs_tesseract
def test_jpeg_is_decoded_cleaned_and_stored_uncompressed(cleaned):
    root, settings, _, objects = cleaned
    annotated, _ = objects["jpeg"]
    assert dcmread(annotated.path).file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    written = _written(root, settings, annotated.path)
    assert written.PhotometricInterpretation == "RGB" and written.SamplesPerPixel == 3
    assert written.pixel_array.shape == (192, 256, 3)


@needs_tesseract
def test_text_that_cannot_be_removed_keeps_the_object_quarantined(cleaned):
    root, _, report, objects = cleaned
    reasons = _quarantine_reasons(root)
    assert reasons.keys() == {"moving", "document"}
    assert report.written == len(CLEANED)
    assert report.quarantined == {Reason.BURNED_IN_TEXT_REMAINS.value: 2}
    assert "frame 4 " in reasons["moving"]["detail"] and "frame 6 " in reasons["moving"]["detail"]
    assert "covers" in reasons["document"]["detail"]
    for name in ("moving", "document"):  # the detail names places, never the text read
        assert not found(
            ["".join(c for c in reasons[name]["detail"] if c.isalnum()).upper()], planted_words(objects[name][1])
        )


def test_without_tesseract_the_objects_stay_quarantined_and_the_cli_warns(cleaned, tmp_path, monkeypatch):
    root, _, _, objects = cleaned
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "grey8.dcm").write_bytes(objects["grey8"][0].path.read_bytes())
    config = tmp_path / "deid.toml"
    config.write_text(
        f'[deid]\nsite = "site-a"\nkey_file = "{tmp_path / "key.enc"}"\n[deid.pixels.burned_in_text]\nenabled = true\n'
    )
    monkeypatch.setenv("PATH", str(tmp_path / "no-programs-here"))
    app = typer.Typer()
    site_data.register(app)
    result = CliRunner().invoke(app, ["deid", str(raw), str(tmp_path / "out"), "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    assert result.output.count("tesseract is not installed") == 1 and "tesseract-ocr" in result.output
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    assert summary["quarantined_by_reason"] == {Reason.OCR_UNAVAILABLE.value: 1}
    (reason,) = (json.loads(p.read_text()) for p in (tmp_path / "out-quarantine").glob("*.reason.json"))
    assert "tesseract-ocr" in reason["detail"]


@needs_tesseract
def test_insite_site_deid_cleans_with_the_setting_on(cleaned, tmp_path):
    root, _, _, objects = cleaned
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("grey8", "document"):
        (raw / f"{name}.dcm").write_bytes(objects[name][0].path.read_bytes())
    config = tmp_path / "deid.toml"
    config.write_text(
        f'[deid]\nsite = "site-a"\nkey_file = "{tmp_path / "key.enc"}"\n[deid.pixels.burned_in_text]\nenabled = true\n'
    )
    app = typer.Typer()
    site_data.register(app)
    result = CliRunner().invoke(app, ["deid", str(raw), str(tmp_path / "out"), "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["files"]["written"] == 1
    assert summary["quarantined_by_reason"] == {Reason.BURNED_IN_TEXT_REMAINS.value: 1}
    assert summary["profile"]["pixels"]["burned_in_text"]["enabled"] is True


def test_redaction_is_off_in_the_shipped_profile():
    assert load_deid_settings(SHIPPED_PROFILE).pixels.burned_in_text == BurnedInText()
    assert BurnedInText().enabled is False


def _object(sop_class: str, modality: str, **attributes) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID, ds.Modality = sop_class, modality
    ds.PixelData = b"\0\0"
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def test_photographs_and_documents_are_not_for_ocr():
    rules = ON.burned_in_text
    secondary_capture = "1.2.840.10008.5.1.4.1.1.7"
    assert redaction_applies(_object(secondary_capture, "OT"), Reason.RISKY_SOP_CLASS, rules)
    assert not redaction_applies(_object(VLPhotographicImageStorage, "XC"), Reason.RISKY_SOP_CLASS, rules)
    assert not redaction_applies(_object(secondary_capture, "XC"), Reason.RISKY_SOP_CLASS, rules)
    face = _object(secondary_capture, "OT", RecognizableVisualFeatures="YES")
    assert not redaction_applies(face, Reason.RISKY_SOP_CLASS, rules)
    assert not redaction_applies(_object(secondary_capture, "OT"), Reason.TRUNCATED, rules)
    assert not redaction_applies(_object(secondary_capture, "OT"), Reason.RISKY_SOP_CLASS, BurnedInText())


def test_colour_captures_other_than_ultrasound_stay_quarantined_unless_allowed():
    """A colour capture may be a photograph or a 3D rendering that shows a face: OCR cannot see one."""
    rules = ON.burned_in_text
    secondary_capture = "1.2.840.10008.5.1.4.1.1.7"
    for photometric in ("RGB", "YBR_FULL_422", "PALETTE COLOR"):
        capture = _object(secondary_capture, "OT", PhotometricInterpretation=photometric)
        assert not redaction_applies(capture, Reason.RISKY_SOP_CLASS, rules)
        allowed = rules.model_copy(update={"clean_colour_captures": True})
        assert redaction_applies(capture, Reason.RISKY_SOP_CLASS, allowed)
    ultrasound = _object("1.2.840.10008.5.1.4.1.1.6.1", "US", PhotometricInterpretation="RGB")
    assert redaction_applies(ultrasound, Reason.RISKY_MODALITY, rules)
    grey = _object(secondary_capture, "OT", PhotometricInterpretation="MONOCHROME2")
    assert redaction_applies(grey, Reason.RISKY_SOP_CLASS, rules)


def _word(text: str, confidence: float = 90.0) -> Word:
    return Word(text, confidence, Box(0, 0, 10, 10))


def test_policy_allows_harmless_words_but_never_an_identifier():
    rules = BurnedInText(enabled=True, allowed_tokens=("cm", "TGC", "Okafor361"))
    policy = TextPolicy(rules, ["Okafor361^Bruno607", "19520120", "1.2.826.0.1.3680043.8.498.1"])
    assert not policy.redacts(_word("cm")) and not policy.remains(_word("TGC"))
    assert policy.redacts(_word("Okafor361,")) and policy.remains(_word("Okafor361,", confidence=0))
    assert policy.remains(_word("20/01/1952", confidence=5)) and policy.remains(_word("01-20-1952", confidence=5))
    assert policy.remains(_word("1952-01-", confidence=5))  # a piece of the date
    assert not policy.denies(_word("3680043"))  # UIDs are not sought
    assert policy.remains(_word("Doppler")) and not policy.remains(_word("Doppler", confidence=20))
    assert not policy.remains(_word("x")) and policy.redacts(_word("x"))


def test_frames_read_and_verified():
    assert frames_to_read(3, 5) == [0, 1, 2] and frames_to_verify([0, 1, 2]) == [0, 1, 2]
    assert frames_to_read(9, 5) == [0, 2, 4, 6, 8]
    assert frames_to_verify([0, 2, 4, 6, 8]) == list(range(9))
    assert frames_to_read(120, 5) == [0, 30, 60, 89, 119]
