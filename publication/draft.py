"""Draft a manifest for one run from the human-written template.

The researcher writes the answers and licences once (``configs/manifest.toml``); the draft adds what
must be exact and is tedious by hand: the run's identity, the consensus round, and the SHA-256 of
every asset file. Architecture (the run record) and weights (the consensus checkpoint) come from the
run directory; environment and code files are whatever the researcher names.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import tomli_w

from common.errors import ManifestError
from common.run_record import RUN_RECORD, RunRecord, checkpoint_path
from configs import shipped
from publication.manifest.policy import sha256_file
from publication.manifest.schema import (
    SCHEMA,
    LoadedManifest,
    RoundSelection,
    load_manifest,
    load_template,
)

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE = shipped("manifest.toml")

_HEADER = """\
# Shared-assets manifest drafted by `insite manifest draft` for run '{run}'.
# Every contributing site approves the exact bytes of this file: any change, even to a comment,
# voids all approvals. Check the outcome with `insite manifest explain {name}`.

"""


def chosen_round(run_dir: Path, selection: RoundSelection) -> int:
    """The round to publish: the run's last closed round, or its closed round with the best Dice.

    Only closed rounds count (their checkpoint carries their scores); ties go to the later round.
    """
    rows = [row for row in RunRecord(run_dir).rounds() if checkpoint_path(run_dir, int(row["round"])).is_file()]
    if not rows:
        raise ManifestError(f"{run_dir}: no scored round with a checkpoint; nothing to publish yet")
    if selection == "final":
        return int(rows[-1]["round"])
    return int(max(rows, key=lambda row: (float(row.get("global_dice", 0.0)), row["round"]))["round"])


def run_files(run_dir: Path, round_number: int) -> dict[str, list[Path]]:
    """The assets every run provides: its record (architecture) and the chosen checkpoint (weights)."""
    return {"architecture": [run_dir / RUN_RECORD], "weights": [checkpoint_path(run_dir, round_number)]}


def draft_manifest(
    run_dir: Path,
    template: Path,
    out: Path,
    extra_files: Mapping[str, Sequence[Path]] | None = None,
    selection: RoundSelection = "final",
) -> LoadedManifest:
    """Write a manifest for ``run_dir`` at ``out`` and return it parsed (so it is known valid)."""
    terms = load_template(template)
    run = RunRecord(run_dir)
    settings, record = run.settings(), run.read()
    round_number = chosen_round(run_dir, selection)
    files = run_files(run_dir, round_number)
    for kind, paths in (extra_files or {}).items():
        files.setdefault(kind, []).extend(paths)
    kinds = {asset.kind for asset in terms.assets}
    for required in ("architecture", "weights"):
        if required not in kinds:
            raise ManifestError(f"{template}: has no '{required}' asset; an export needs its terms")
    unknown = set(files) - kinds
    if unknown:
        raise ManifestError(f"{template}: no terms (licence, access) for asset kind(s) {sorted(unknown)}")
    assets = []
    for asset in terms.assets:
        paths = files.get(asset.kind, [])
        if not paths:
            log.info("template asset '%s' left out: no files given", asset.kind)
            continue
        entry = asset.model_dump(mode="python", exclude_none=True, exclude_defaults=True)
        entry.update(
            kind=asset.kind,
            access=asset.access,
            files=[{"path": _relative(path, out.parent), "sha256": sha256_file(path)} for path in paths],
        )
        assets.append(entry)
    document = {
        "schema": SCHEMA,
        "project": terms.project.model_dump(mode="python"),
        "run": {
            "name": record["name"],
            "settings_digest": settings.digest(),
            "round": round_number,
            "selection": selection,
        },
        "answers": terms.answers.model_dump(mode="python"),
        "assets": assets,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        _HEADER.format(run=record["name"], name=out.name) + tomli_w.dumps(document, multiline_strings=True),
        encoding="utf-8",
    )
    return load_manifest(out)


def _relative(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()
