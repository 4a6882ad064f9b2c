"""``insite export``: the consensus model as a MONAI bundle, if and only if the policy allows it.

Order of work: everything is checked before anything is written (manifest, run identity, asset
bytes, signatures, policy); then the export is assembled in a temporary sibling folder, verified
with the same checks ``insite verify`` runs, and only then renamed to its final name. A refused or
failed export leaves nothing behind that could be mistaken for a published model.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import torch
from monai.bundle import ckpt_export

from common.errors import ExportError
from common.keys import fingerprint
from common.run_record import RUN_RECORD, RunRecord, load_checkpoint
from publication import layout
from publication.bundle_configs import NETWORK_ID
from publication.contents import derive
from publication.manifest.approvals import (
    ApprovalSet,
    check_approvals,
    load_approval_set,
    manifest_digest,
)
from publication.manifest.policy import (
    Refusal,
    file_refusals,
    policy_refusals,
    sha256_file,
)
from publication.manifest.schema import LoadedManifest, load_manifest
from publication.signing import load_public_keys, public_pem
from publication.verify import VerifyReport, listed_files, verify_export

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportResult:
    folder: Path
    bundle: Path
    report: VerifyReport


def _run_binding(loaded: LoadedManifest, run_dir: Path) -> list[Refusal]:
    """The manifest must be about this run: same record bytes, same settings, a real checkpoint."""
    manifest = loaded.manifest
    record_file = run_dir / RUN_RECORD
    refusals = []
    architecture, weights = manifest.asset("architecture"), manifest.asset("weights")
    if architecture is None or weights is None:
        return [Refusal("manifest", "an export needs an 'architecture' and a 'weights' asset")]
    if sha256_file(record_file) not in {f.sha256 for f in architecture.files}:
        refusals.append(Refusal("asset 'architecture'", f"does not pin this run's {record_file}"))
    if len(weights.files) != 1:
        refusals.append(Refusal("asset 'weights'", "must be exactly one file: the consensus checkpoint"))
    else:
        checkpoint = load_checkpoint(loaded.resolve(weights.files[0]))
        run = manifest.run
        if checkpoint.round != run.round or checkpoint.settings_digest != run.settings_digest:
            refusals.append(Refusal("asset 'weights'", f"is not round {manifest.run.round} of this run"))
    return refusals


def check_export(
    run_dir: Path, loaded: LoadedManifest, approval_set: ApprovalSet, keys_dir: Path, today: date
) -> list[Refusal]:
    """Every reason to refuse exporting ``run_dir`` under this manifest and these approvals."""
    manifest = loaded.manifest
    run = RunRecord(run_dir)
    record, settings = run.read(), run.settings()
    if manifest.run.name != record["name"] or manifest.run.settings_digest != settings.digest():
        return [Refusal("manifest", f"is for run '{manifest.run.name}', not for {run_dir} ('{record['name']}')")]
    if len(manifest.project.label_classes) != settings.model.out_channels:
        return [
            Refusal(
                "manifest",
                f"project.label_classes names {len(manifest.project.label_classes)} "
                f"classes, the model has {settings.model.out_channels}",
            )
        ]
    refusals = file_refusals(manifest, lambda _asset, file: loaded.resolve(file))
    if refusals:
        return refusals
    refusals = _run_binding(loaded, run_dir)
    digest = manifest_digest(loaded.raw)
    if approval_set.manifest_sha256 != digest:
        refusals.append(Refusal("approvals", "were collected for another version of the manifest"))
    approvals = check_approvals(approval_set.approvals, digest, load_public_keys(keys_dir))
    return refusals + policy_refusals(manifest, record.get("sites", []), approvals, today)


def _write_bundle(loaded: LoadedManifest, run_dir: Path, bundle: Path, approvers: dict[str, str]) -> None:
    manifest = loaded.manifest
    run = RunRecord(run_dir)
    weights = manifest.asset("weights")
    checkpoint = load_checkpoint(loaded.resolve(weights.files[0]))  # type: ignore[union-attr]
    files = derive(manifest, run.read(), run.settings(), checkpoint, approvers)
    for folder in ("configs", "models", "docs"):
        (bundle / folder).mkdir(parents=True)
    _write_json(bundle / layout.METADATA, files.metadata)
    _write_json(bundle / layout.INFERENCE, files.inference)
    (bundle / layout.CARD).write_text(files.card, encoding="utf-8")
    (bundle / layout.LICENSE).write_text(files.licence, encoding="utf-8")
    torch.save(checkpoint.weights, bundle / layout.MODEL)
    _torchscript(bundle)


@contextmanager
def _quiet_monai() -> Iterator[None]:
    """MONAI's export logs at INFO on its own handlers, warns that configs run code (ours does), and
    torch warns that TorchScript is deprecated (MONAI bundles still expect ``model.ts``)."""
    loggers = [logging.getLogger(name) for name in ("monai.bundle.scripts", "monai.networks.utils")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def _torchscript(bundle: Path) -> None:
    """models/model.ts via MONAI's own ``ckpt_export`` (configs embedded, as MONAI expects)."""
    with _quiet_monai():
        ckpt_export(
            net_id=NETWORK_ID,
            filepath=str(bundle / layout.TORCHSCRIPT),
            ckpt_file=str(bundle / layout.MODEL),
            meta_file=str(bundle / layout.METADATA),
            config_file=str(bundle / layout.INFERENCE),
            bundle_root=str(bundle),
        )


def _write_json(path: Path, value: object) -> None:
    path.write_text(json.dumps(value, indent=1) + "\n", encoding="utf-8")


def _write_sums(out: Path) -> None:
    lines = [f"{sha256_file(out / name)}  {name}" for name in listed_files(out)]
    (out / layout.SUMS).write_text("\n".join(lines) + "\n", encoding="utf-8")


def export_run(
    run_dir: Path, manifest_path: Path, approvals_path: Path, keys_dir: Path, out: Path, today: date | None = None
) -> ExportResult:
    """Export ``run_dir``'s consensus model to ``out`` under the manifest; raise ExportError if refused."""
    today = today or date.today()
    if out.exists():
        raise ExportError(f"{out}: already exists; choose a new folder for the export")
    loaded = load_manifest(manifest_path)
    approval_set = load_approval_set(approvals_path)
    refusals = check_export(run_dir, loaded, approval_set, keys_dir, today)
    if refusals:
        raise ExportError("export refused: " + "; ".join(str(r) for r in refusals))
    keys = load_public_keys(keys_dir)
    contributors = sorted(RunRecord(run_dir).read()["sites"])
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
        for asset in loaded.manifest.assets:
            for file in asset.files:
                target = layout.asset_copy(staging, asset, file)
                if target.exists():
                    raise ExportError(f"asset '{asset.kind}': two files named {target.name}")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(loaded.resolve(file), target)
        (staging / layout.MANIFEST).write_bytes(loaded.raw)
        kept = [a for a in approval_set.approvals if a.site in contributors]
        (staging / layout.APPROVALS).write_text(
            ApprovalSet(manifest_sha256=approval_set.manifest_sha256, approvals=kept).model_dump_json(indent=1) + "\n",
            encoding="utf-8",
        )
        (staging / layout.KEYS).mkdir()
        for site in contributors:
            (staging / layout.KEYS / f"{site}.pub").write_bytes(public_pem(keys[site]))
        _write_bundle(
            loaded, run_dir, staging / layout.BUNDLE, {site: fingerprint(keys[site]) for site in contributors}
        )
        _write_sums(staging)
        report = verify_export(staging, keys_dir, today)
        if not report.ok:
            raise ExportError("export failed its own verification: " + "; ".join(report.failures()))
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("exported %s to %s", run_dir, out)
    return ExportResult(out, out / layout.BUNDLE, VerifyReport(out, report.checks))
