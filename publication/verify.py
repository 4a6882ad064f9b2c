"""``insite verify``: check an export folder anywhere, offline, with nothing but the folder and keys.

Checks, each reported pass/fail with a reason naming the file, asset or site:

1. checksums   every file is listed in SHA256SUMS with its hash, and nothing unlisted was added;
2. manifest    the manifest parses against the schema;
3. assets      the copies of the approved asset files match the SHA-256 the manifest pins;
4. run record  the (approved) run record is the manifest's run; it names the contributing sites;
5. approvals   every contributing site signed this exact manifest with its consortium key;
6. policy      the decision trees, licences, embargoes and the no-training-data rule allow every asset;
7. metadata    the bundle's metadata.json is valid against MONAI's schema (copy shipped with insite);
8. model       models/model.pt, and the parameters of models/model.ts, are exactly the approved
               checkpoint's weights;
9. bundle files inference.json, metadata.json (but its tool versions), the model card and LICENSE are
               exactly what the approved manifest, run record and checkpoint produce, so editing
               them and regenerating the (unsigned) SHA256SUMS is caught too.

Keys: pass the consortium's public keys (``--keys``) to check against your own copy; without them the
keys shipped in the export are used, which proves integrity but not who the signers are.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import jsonschema
import torch

from common.errors import InsiteError
from common.keys import PublicKey, fingerprint
from common.run_record import RUN_RECORD, Checkpoint, load_checkpoint
from common.settings import RunSettings
from publication import layout
from publication.contents import derive, without_tool_versions
from publication.manifest.approvals import (
    check_approvals,
    load_approval_set,
    manifest_digest,
)
from publication.manifest.policy import (
    Refusal,
    approval_refusals,
    asset_refusals,
    file_refusals,
    sha256_file,
)
from publication.manifest.schema import LoadedManifest, load_manifest
from publication.signing import load_public_keys


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class VerifyReport:
    folder: Path
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)

    def failures(self) -> list[str]:
        return [f"{check.name}: {check.detail}" for check in self.checks if not check.ok]


class _Failed(Exception):
    """A check's reason for failing (internal: turned into a failed :class:`Check`)."""


def _refused(refusals: list[Refusal]) -> None:
    if refusals:
        raise _Failed("; ".join(str(refusal) for refusal in refusals))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _Failed(f"{path.name}: not readable JSON ({error})") from None


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged file
        raise _Failed(f"{path.name}: not a readable weights file ({error})") from None


def _load_torchscript(path: Path) -> dict[str, torch.Tensor]:
    """Parameters and buffers of the TorchScript model (its code is loaded, never run)."""
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated; MONAI bundles still ship it
            warnings.simplefilter("ignore", DeprecationWarning)
            return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
    except Exception as error:  # torch raises many types for a damaged archive
        raise _Failed(f"{path.name}: not a readable TorchScript model ({error})") from None


def parse_sums(text: str) -> dict[str, str]:
    sums = {}
    for line in text.splitlines():
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name:
            raise _Failed(f"{layout.SUMS}: malformed line {line!r}")
        sums[name] = digest
    return sums


def listed_files(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != layout.SUMS)


class _Verifier:
    def __init__(self, out: Path, keys_dir: Path | None, today: date) -> None:
        self.out = out
        self.bundle = out / layout.BUNDLE
        self.keys_dir = keys_dir
        self.today = today
        self.loaded: LoadedManifest | None = None
        self.record: dict[str, Any] | None = None
        self.settings: RunSettings | None = None
        self.keys: dict[str, PublicKey] | None = None
        self.checkpoint: Checkpoint | None = None

    def run(self) -> VerifyReport:
        report = VerifyReport(self.out)
        steps: list[tuple[str, Callable[[], str]]] = [
            ("checksums", self.checksums),
            ("manifest", self.manifest),
            ("assets", self.assets),
            ("run record", self.run_record),
            ("approvals", self.approvals),
            ("policy", self.policy),
            ("metadata", self.metadata),
            ("model", self.model),
            ("bundle files", self.bundle_files),
        ]
        for name, step in steps:
            try:
                report.checks.append(Check(name, True, step()))
            except (_Failed, InsiteError) as error:
                report.checks.append(Check(name, False, str(error)))
        return report

    def _need_manifest(self) -> LoadedManifest:
        if self.loaded is None:
            raise _Failed("not checked: the manifest is unreadable")
        return self.loaded

    def _need_run(self) -> tuple[dict[str, Any], RunSettings]:
        if self.record is None or self.settings is None:
            raise _Failed("not checked: the run record is unusable")
        return self.record, self.settings

    def checksums(self) -> str:
        sums_file = self.out / layout.SUMS
        if not sums_file.is_file():
            raise _Failed(f"{sums_file} not found")
        sums = parse_sums(sums_file.read_text(encoding="utf-8"))
        present = listed_files(self.out)
        problems = [f"{name}: not listed in {layout.SUMS}" for name in present if name not in sums]
        for name, digest in sorted(sums.items()):
            path = self.out / name
            if not path.is_file():
                problems.append(f"{name}: missing")
            elif sha256_file(path) != digest:
                problems.append(f"{name}: SHA-256 mismatch (file was modified)")
        if problems:
            raise _Failed("; ".join(problems))
        return f"{len(sums)} files match {layout.SUMS}"

    def manifest(self) -> str:
        self.loaded = load_manifest(self.out / layout.MANIFEST)
        return f"{layout.MANIFEST} valid, digest {manifest_digest(self.loaded.raw)[:16]}..."

    def assets(self) -> str:
        manifest = self._need_manifest().manifest
        _refused(file_refusals(manifest, lambda asset, file: layout.asset_copy(self.out, asset, file)))
        return ", ".join(f"{a.kind} ({len(a.files)} file(s))" for a in manifest.assets) + " match"

    def run_record(self) -> str:
        manifest = self._need_manifest().manifest
        architecture = manifest.asset("architecture")
        found = [f for f in architecture.files if Path(f.path).name == RUN_RECORD] if architecture else []
        if architecture is None or not found:
            raise _Failed(f"the 'architecture' asset holds no {RUN_RECORD}")
        path = layout.asset_copy(self.out, architecture, found[0])
        record = _read_json(path)
        if not isinstance(record, dict):
            raise _Failed(f"{path}: not a run record")
        try:
            settings = RunSettings.model_validate(record["settings"])
        except (TypeError, ValueError, KeyError) as error:
            raise _Failed(f"{path}: not a readable run record ({error})") from None
        if record.get("name") != manifest.run.name:
            raise _Failed(f"{path}: run '{record.get('name')}' is not the manifest's '{manifest.run.name}'")
        digest = settings.digest()
        if record.get("settings_digest") != digest or digest != manifest.run.settings_digest:
            raise _Failed(f"{path}: settings digest does not match the manifest's run")
        self.record, self.settings = record, settings
        return f"run '{record['name']}', contributing sites: {', '.join(sorted(record.get('sites', [])))}"

    def approvals(self) -> str:
        loaded = self._need_manifest()
        record, _ = self._need_run()
        keys_dir = self.keys_dir or self.out / layout.KEYS
        keys = self.keys = load_public_keys(keys_dir)
        approval_set = load_approval_set(self.out / layout.APPROVALS)
        digest = manifest_digest(loaded.raw)
        if approval_set.manifest_sha256 != digest:
            raise _Failed(f"{layout.APPROVALS} is for another version of the manifest")
        check = check_approvals(approval_set.approvals, digest, keys)
        _refused(approval_refusals(record.get("sites", []), check))
        source = "your keys" if self.keys_dir else "keys shipped in the export (pass --keys to use yours)"
        signed = ", ".join(f"{site} {fingerprint(keys[site])}" for site in check.valid)
        return f"signed by {signed}; checked against {source}"

    def policy(self) -> str:
        manifest = self._need_manifest().manifest
        _refused(asset_refusals(manifest, self.today))
        return f"all {len(manifest.assets)} assets may be published"

    def metadata(self) -> str:
        missing = [
            name
            for name in (layout.LICENSE, layout.METADATA, layout.MODEL, layout.INFERENCE, layout.CARD)
            if not (self.bundle / name).is_file()
        ]
        if missing:
            raise _Failed(f"bundle lacks {', '.join(missing)}")
        meta = _read_json(self.bundle / layout.METADATA)
        schema = json.loads(layout.SCHEMA_FILE.read_text(encoding="utf-8"))
        errors = sorted(jsonschema.Draft201909Validator(schema).iter_errors(meta), key=str)
        if errors:
            raise _Failed(f"{layout.METADATA}: {errors[0].message} (at {'/'.join(map(str, errors[0].path))})")
        return f"{layout.METADATA} valid against MONAI bundle schema 20240725"

    def _need_checkpoint(self) -> Checkpoint:
        if self.checkpoint is None:
            raise _Failed("not checked: the approved checkpoint is unusable")
        return self.checkpoint

    def model(self) -> str:
        manifest = self._need_manifest().manifest
        _, settings = self._need_run()
        weights = manifest.asset("weights")
        if weights is None or len(weights.files) != 1:
            raise _Failed("the manifest needs exactly one 'weights' file (the consensus checkpoint)")
        checkpoint = load_checkpoint(layout.asset_copy(self.out, weights, weights.files[0]))
        if checkpoint.round != manifest.run.round or checkpoint.settings_digest != settings.digest():
            raise _Failed("the approved checkpoint is not the manifest's run and round")
        self.checkpoint = checkpoint
        _same_weights(_load_weights(self.bundle / layout.MODEL), checkpoint, layout.MODEL)
        _same_weights(_load_torchscript(self.bundle / layout.TORCHSCRIPT), checkpoint, layout.TORCHSCRIPT)
        return (
            f"{layout.MODEL} and the parameters of {layout.TORCHSCRIPT} = approved "
            f"round-{checkpoint.round} weights ({len(checkpoint.weights)} tensors)"
        )

    def bundle_files(self) -> str:
        loaded = self._need_manifest()
        record, settings = self._need_run()
        checkpoint = self._need_checkpoint()
        if self.keys is None:
            raise _Failed("not checked: no consortium keys")
        contributors = sorted(record.get("sites", []))
        approvers = {site: fingerprint(self.keys[site]) for site in contributors if site in self.keys}
        expected = derive(loaded.manifest, record, settings, checkpoint, approvers)
        problems = []
        meta = _read_json(self.bundle / layout.METADATA)
        if without_tool_versions(meta) != without_tool_versions(expected.metadata):
            problems.append(layout.METADATA)
        if _read_json(self.bundle / layout.INFERENCE) != expected.inference:
            problems.append(layout.INFERENCE)
        for name, text in ((layout.CARD, expected.card), (layout.LICENSE, expected.licence)):
            if (self.bundle / name).read_text(encoding="utf-8") != text:
                problems.append(name)
        if problems:
            raise _Failed(
                f"{', '.join(problems)}: not what the approved manifest, run record and "
                "checkpoint produce (edited after export)"
            )
        return (
            f"{layout.INFERENCE}, {layout.METADATA} (but tool versions), {layout.CARD} and "
            f"{layout.LICENSE} match what the approved inputs produce"
        )


def _same_weights(found: dict[str, torch.Tensor], checkpoint: Checkpoint, name: str) -> None:
    expected = checkpoint.weights
    if set(found) != set(expected) or not all(torch.equal(found[k], expected[k]) for k in expected):
        raise _Failed(f"{name} differs from the approved checkpoint's weights")


def verify_export(out: Path, keys_dir: Path | None = None, today: date | None = None) -> VerifyReport:
    """Run every check on the export folder ``out``; never raises for a failed check."""
    return _Verifier(out, keys_dir, today or date.today()).run()
