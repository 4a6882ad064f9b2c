"""De-identification side by side: insite, dicognito, deid, dicom-anonymizer and plain pydicom.

One run, the same files for every tool: pydicom's test files, pydicom-data, the character-set
files and a generated synthetic set with planted identifiers (deploy.demo.synthetic_dicom). For each
tool: files/s over all input files, files it failed on, outputs pydicom cannot re-read, and the
number of output files still holding an identifying value of their own original. Residuals are
found with the project's scanner (siteprep.deid.scan) against each original's identifiers
(siteprep.deid.identifiers, default profile options), the same way for every tool.

    python -m bench.deid_throughput [--synthetic 1000] [--work /tmp/deid-bench]

Peers come from the `bench-deid` extra (pip install -e '.[bench-deid]'); a missing peer is
reported as such, not skipped silently.
"""

from __future__ import annotations

import argparse
import logging
import random
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.data import get_charset_files, get_testdata_files

from deploy.demo.synthetic_dicom import random_patient, write_series
from siteprep.deid.identifiers import collect_identifiers
from siteprep.deid.keyfile import Passphrase
from siteprep.deid.pool import worker_count
from siteprep.deid.profile import Profile
from siteprep.deid.run import deidentify_tree
from siteprep.deid.scan import needles, scan_file
from siteprep.deid.settings import DeidSettings, ProfileOptions

SLICES_PER_SERIES = 20
BENCH_KEY = Passphrase("bench-throughput-passphrase", "the benchmark")  # the encrypted key is part of the cost


@dataclass
class Result:
    tool: str
    files_in: int
    seconds: float
    written: int = 0
    failed: int = 0
    unreadable_outputs: int = 0
    with_residuals: int = 0
    note: str = ""

    @property
    def rate(self) -> float:
        return self.files_in / self.seconds if self.seconds else 0.0


def build_corpus(work: Path, synthetic: int) -> list[Path]:
    corpus = work / "corpus"
    shipped = sorted({Path(p) for p in get_testdata_files() + get_charset_files() if Path(p).is_file()})
    (corpus / "shipped").mkdir(parents=True)
    for index, path in enumerate(shipped):
        shutil.copyfile(path, corpus / "shipped" / f"{index:03d}_{path.name}")
    rng, noise = random.Random(2024), np.random.default_rng(2024)
    written = 0
    while written < synthetic:
        patient = random_patient(rng)
        for series in (1, 2):
            count = min(SLICES_PER_SERIES, synthetic - written)
            if count <= 1:
                break
            volume = noise.normal(0, 400, (count, 128, 128)).astype(np.int16)
            write_series(volume, corpus / "synthetic" / f"{written:05d}", patient, series_number=series)
            written += count
    return sorted(p for p in corpus.rglob("*") if p.is_file())


def _identifiers(path: Path, profile: Profile) -> list[str]:
    try:
        return sorted(collect_identifiers(dcmread(path, force=True), profile))
    except Exception:
        return []


def _per_file(
    tool: str, files: list[Path], out: Path, action: Callable[[Path, Path], None]
) -> tuple[Result, list[tuple[Path, Path]]]:
    out.mkdir(parents=True)
    pairs = []
    failed = 0
    started = time.perf_counter()
    for index, path in enumerate(files):
        target = out / f"{index:05d}.dcm"
        try:
            action(path, target)
        except Exception:
            failed += 1
            continue
        if target.exists():
            pairs.append((path, target))
    seconds = time.perf_counter() - started
    return Result(tool, len(files), seconds, written=len(pairs), failed=failed), pairs


def _floor(path: Path, target: Path) -> None:
    dcmread(path).save_as(target)


def _dicognito() -> Callable[[Path, Path], None]:
    from dicognito.anonymizer import Anonymizer  # noqa: PLC0415  (a peer, installed with the bench-deid extra)

    anonymizer = Anonymizer()

    def run(path: Path, target: Path) -> None:
        ds = dcmread(path)
        anonymizer.anonymize(ds)
        ds.save_as(target)

    return run


def _deid() -> Callable[[Path, Path], None]:
    from deid.dicom import replace_identifiers  # noqa: PLC0415  (a peer, bench-deid extra)

    def run(path: Path, target: Path) -> None:
        (parsed,) = replace_identifiers(dicom_files=[str(path)], save=False)
        parsed.save_as(target)

    return run


def _dicom_anonymizer() -> Callable[[Path, Path], None]:
    from dicomanonymizer import anonymize_dicom_file  # noqa: PLC0415  (a peer, bench-deid extra)

    return lambda path, target: anonymize_dicom_file(str(path), str(target))


def _residuals(result: Result, pairs: list[tuple[Path, Path]], profile: Profile) -> None:
    for original, output in pairs:
        findings = scan_file(output, needles(_identifiers(original, profile)), output.name)
        result.unreadable_outputs += any(f.where == "file" for f in findings)
        result.with_residuals += any(f.where != "file" for f in findings)


def run(work: Path, synthetic: int) -> list[Result]:
    if work.exists():
        shutil.rmtree(work)
    files = build_corpus(work, synthetic)
    corpus = work / "corpus"
    profile = Profile(ProfileOptions())
    results = []

    floor, _ = _per_file("pydicom read+write (floor)", files, work / "floor", _floor)
    results.append(floor)

    # The default uses a worker per CPU; the one-process row is the like-for-like comparison with
    # the peers, which all run in one process.
    for tool, workers in (("insite", None), ("insite (1 process)", 1)):
        settings = DeidSettings(site="bench", key_file=work / f"{tool}-key" / "key.enc", workers=workers)
        report = deidentify_tree(settings, corpus, work / tool, work / f"{tool}-quarantine", passphrase=BENCH_KEY)
        assert report.residual_scan is not None  # deidentify_tree scans what it wrote unless told not to
        results.append(
            Result(
                tool,
                report.files_in,
                report.seconds,
                written=report.written,
                with_residuals=report.residual_scan.files_with_residuals,
                note=f"quarantined {sum(report.quarantined.values())}; "
                f"{workers or worker_count(None, report.files_in)} process(es)",
            )
        )

    for tool, factory in (
        ("dicognito", _dicognito),
        ("deid (default recipe)", _deid),
        ("dicom-anonymizer", _dicom_anonymizer),
    ):
        try:
            action = factory()
        except ImportError as error:
            results.append(Result(tool, len(files), 0.0, note=f"not installed ({error.name})"))
            continue
        result, pairs = _per_file(tool, files, work / tool.split()[0], action)
        _residuals(result, pairs, profile)
        results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", type=int, default=1000, help="synthetic files with planted identifiers")
    parser.add_argument("--work", type=Path, default=Path("/tmp/insite-deid-bench"))
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the peers log a line per odd file
    warnings.simplefilter("ignore")
    results = run(args.work, args.synthetic)
    floor = results[0].rate
    dicognito = next((r.rate for r in results if r.tool == "dicognito"), 0.0)
    print(
        f"{'tool':30} {'files':>6} {'s':>7} {'files/s':>8} {'x floor':>8} {'written':>8} {'failed':>7} "
        f"{'unreadable out':>14} {'files w/ residual id':>20}  note"
    )
    for r in results:
        print(
            f"{r.tool:30} {r.files_in:6d} {r.seconds:7.2f} {r.rate:8.1f} {r.rate / floor if floor else 0:8.2f} "
            f"{r.written:8d} {r.failed:7d} {r.unreadable_outputs:14d} {r.with_residuals:20d}  {r.note}"
        )
    print()
    for ours in (r for r in results if r.tool.startswith("insite")):
        against = f"{ours.rate / dicognito:.2f}x" if dicognito else "- (not installed: pip install -e .[bench-deid])"
        print(
            f"{ours.tool}: {against} dicognito (target >= 1.5), "
            f"{ours.rate / floor:.2f}x plain read+write (target >= 0.7), original identifiers in "
            f"{ours.with_residuals} of {ours.written} files written (target 0)"
        )


if __name__ == "__main__":
    main()
