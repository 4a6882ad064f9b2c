"""OCR redaction of burned-in text: what it releases, what it keeps out, what it leaves, how fast.

Over pydicom's test files, pydicom-data, the character-set files and generated US/SC objects with
names, IDs and dates burned in (deploy.demo.burned_in_annotation), the de-identifier runs twice:
as shipped (redaction off) and with ``[deid.pixels.burned_in_text] enabled``. Reported:

- how many of the objects quarantined as risky (burned-in annotation, risky modality or SOP
  class, scanned/captured, low variance) are now cleaned and written;
- how many stay quarantined, by reason;
- residual words on the written cleaned objects: words the pipeline's own reader still finds
  on every frame (the verification rule), and, for the generated objects, planted words a second
  reader (tesseract on the plain rendering, 3x) still finds; target 0 for both;
- OCR time per frame (rendering + tesseract), over every frame read in finding and verifying.

    python -m bench.burned_in_text [--generated 12] [--work /tmp/ocr-bench]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
import time
import warnings
from collections import Counter
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_charset_files, get_testdata_files

from deploy.demo.burned_in_annotation import (
    FONTS,
    Kind,
    Label,
    Region,
    found,
    label_lines,
    planted_words,
    read_plainly,
    write_annotated,
)
from deploy.demo.synthetic_dicom import random_patient
from siteprep.deid.burned_in_text import DisplayRendering, read_words, require_tesseract
from siteprep.deid.identifiers import collect_identifiers
from siteprep.deid.keyfile import Passphrase
from siteprep.deid.keys import open_site_key
from siteprep.deid.pixels import decoded_frames
from siteprep.deid.profile import Profile
from siteprep.deid.run import deidentify_tree
from siteprep.deid.settings import BurnedInText, DeidSettings, PixelSafety
from siteprep.deid.text_policy import TextPolicy
from siteprep.deid.text_redaction import CLEANABLE_RISKS, redact_burned_in_text

BENCH_KEY = Passphrase("bench-burned-in-text-passphrase", "the benchmark")
KINDS: tuple[Kind, ...] = ("grey8", "grey16", "rgb", "rgb-jpeg")
COLOURS = ((255, 255, 255), (255, 255, 0), (0, 255, 255), (0, 255, 0))


def generated(folder: Path, count: int) -> dict[str, list[str]]:
    """``count`` US and SC objects with a patient's lines burned in; their planted lines by file name."""
    rng = random.Random(2026)
    planted = {}
    for index in range(count):
        patient = random_patient(rng)
        lines = label_lines(patient)
        rows, columns = rng.choice(((256, 320), (480, 640), (192, 256)))
        spots = [(6, 6), (8, columns // 2 + 10), (rows - 24, 6), (rows // 2, columns // 3)]
        labels = [
            Label(line, row, column, rng.choice((14, 16, 18, 22)), rng.choice(FONTS), rng.choice(COLOURS))
            for line, (row, column) in zip(lines, spots, strict=True)
        ]
        us = index % 2 == 0
        frames = 8 if index % 4 == 0 else 1
        name = f"generated_{index:03d}.dcm"
        write_annotated(
            folder / name,
            patient,
            [labels] * frames,
            kind=KINDS[index % len(KINDS)],
            modality="US" if us else "SC",
            rows=rows,
            columns=columns,
            regions=[Region(40, 10, rows - 30, columns - 11)] if us else (),
            seed=index,
        )
        planted[name] = lines
    return planted


def _quarantined(folder: Path) -> dict[str, str]:
    return {
        entry["source"]: entry["reason"] for entry in (json.loads(p.read_text()) for p in folder.glob("*.reason.json"))
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generated", type=int, default=12, help="generated objects with burned-in text")
    parser.add_argument("--work", type=Path, default=Path("/tmp/ocr-bench"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.simplefilter("ignore")
    require_tesseract()
    shutil.rmtree(args.work, ignore_errors=True)
    source = args.work / "src"
    shipped = sorted({Path(p) for p in get_testdata_files() + get_charset_files() if Path(p).is_file()})
    for index, path in enumerate(shipped):
        (source / f"{index:03d}").mkdir(parents=True)
        shutil.copyfile(path, source / f"{index:03d}" / path.name)
    planted = {f"gen/{name}": lines for name, lines in generated(source / "gen", args.generated).items()}

    runs = {}
    for label, pixels in (("off", PixelSafety()), ("on", PixelSafety(burned_in_text=BurnedInText(enabled=True)))):
        settings = DeidSettings(site="bench", key_file=args.work / "key.enc", pixels=pixels, workers=1)
        started = time.perf_counter()
        report = deidentify_tree(settings, source, args.work / label, args.work / f"{label}-q", passphrase=BENCH_KEY)
        runs[label] = (settings, report, _quarantined(args.work / f"{label}-q"), time.perf_counter() - started)
    risky = {src for src, reason in runs["off"][2].items() if reason in CLEANABLE_RISKS}
    still = Counter(reason for src, reason in runs["on"][2].items() if src in risky)
    cleaned = sorted(risky - runs["on"][2].keys())

    # residual words and OCR time, object by object, on the originals that were cleaned
    settings = runs["on"][0]
    key = open_site_key(settings, persist=False, passphrase=BENCH_KEY)
    profile = Profile(settings.options)
    residual_words = residual_planted = frames_read = 0
    ocr_seconds = 0.0
    for src in cleaned:
        original = dcmread(source / src)
        identifiers = collect_identifiers(original, profile)
        started = time.perf_counter()
        redaction = redact_burned_in_text(dcmread(source / src), settings.pixels.burned_in_text, identifiers)
        ocr_seconds += time.perf_counter() - started
        frames_read += redaction.frames_read
        (written_path,) = (args.work / "on").rglob(f"{key.uid(str(original.SOPInstanceUID))}.dcm")
        written = dcmread(written_path)
        rendering = DisplayRendering(original, decoded_frames(original), 0)
        policy = TextPolicy(settings.pixels.burned_in_text, identifiers)
        residual_words += sum(
            policy.remains(word) for frame in decoded_frames(written) for word in read_words(rendering.page(frame))
        )
        if src in planted:
            residual_planted += len(found(read_plainly(written), planted_words(planted[src])))

    scan = runs["on"][1].residual_scan
    assert scan is not None  # the run scans its output unless told not to
    generated_risky = sum(src in planted for src in risky)
    rows = [
        ("files", str(runs["off"][1].files_in)),
        ("quarantined as risky, redaction off", f"{len(risky)} ({generated_risky} generated)"),
        ("  now cleaned and written", f"{len(cleaned)} ({sum(src in planted for src in cleaned)} generated)"),
        *((f"  still quarantined: {reason}", str(count)) for reason, count in sorted(still.items())),
        ("residual words, pipeline reader, every frame", str(residual_words)),
        ("residual planted words, second reader (generated)", str(residual_planted)),
        ("OCR frames read (finding + verifying)", str(frames_read)),
        ("OCR time per frame (render + tesseract)", f"{ocr_seconds / max(1, frames_read):.3f} s"),
        ("run time off / on", f"{runs['off'][3]:.1f} s / {runs['on'][3]:.1f} s"),
        ("residual header scan, redaction on", f"{scan.files_with_residuals} files with identifiers"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
