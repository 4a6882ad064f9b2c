"""The bundle files derived from approved inputs, computed the same way by export and by verify.

Every text file of the bundle (``inference.json``, ``metadata.json``, the model card, ``LICENSE``)
is a pure function of the signed manifest, the approved run record and checkpoint, and the
approvers' keys. ``insite verify`` recomputes them and compares, so editing the bundle and
regenerating ``SHA256SUMS`` (which nobody signs) is still caught. The only fields left out of the
comparison are the tool versions in ``metadata.json``, which describe the exporting machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.run_record import Checkpoint
from common.settings import RunSettings
from publication.bundle_configs import inference_config, metadata
from publication.card import licence_text, model_card, selection_metrics, summarise_metrics
from publication.manifest.policy import decisions
from publication.manifest.schema import Manifest

TOOL_VERSION_FIELDS = ("monai_version", "pytorch_version", "numpy_version", "required_packages_version")


@dataclass(frozen=True)
class DerivedFiles:
    metadata: dict[str, Any]
    inference: dict[str, Any]
    card: str
    licence: str


def derive(
    manifest: Manifest, record: dict[str, Any], settings: RunSettings, checkpoint: Checkpoint, approvers: dict[str, str]
) -> DerivedFiles:
    summary = summarise_metrics(checkpoint.metrics, manifest.run.round)
    return DerivedFiles(
        metadata=metadata(manifest, settings, record, summary.eval_metrics() | selection_metrics(manifest.run)),
        inference=inference_config(settings),
        card=model_card(manifest, settings, record, summary, decisions(manifest), approvers),
        licence=licence_text(manifest),
    )


def without_tool_versions(meta: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in meta.items() if key not in TOOL_VERSION_FIELDS}
