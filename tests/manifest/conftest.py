"""Manifests written as real TOML files with real asset files beside them."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomli_w

PROJECT = {
    "name": "p",
    "consortium": "c",
    "title": "t",
    "task": "segmentation",
    "description": "d",
    "intended_use": "research",
    "authors": ["A. Author"],
    "copyright": "(c) 2026 c",
    "label_classes": ["background", "lesion"],
}
ANSWERS = {"commercialise": False, "funding": "allows", "ethics": "allows", "dua_required": False}
TERMS = {
    "architecture": {"licence": "Apache-2.0", "access": "public"},
    "environment": {"licence": "MIT", "access": "public"},
    "code": {"licence": "BSD-3-Clause", "access": "public", "role": "inference"},
    "weights": {"licence": "CC-BY-4.0", "access": "public"},
    "training_data": {"licence": "CC-BY-4.0", "access": "public"},
}


def manifest_document(
    folder: Path,
    kinds: tuple[str, ...] = ("architecture", "weights"),
    answers: dict[str, Any] | None = None,
    assets: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A manifest document whose asset files exist in ``folder`` (one small file per asset)."""
    entries = []
    for kind in kinds:
        data = f"{kind} bytes\n".encode()
        (folder / f"{kind}.bin").write_bytes(data)
        entry = {
            "kind": kind,
            **TERMS[kind],
            **(assets or {}).get(kind, {}),
            "files": [{"path": f"{kind}.bin", "sha256": hashlib.sha256(data).hexdigest()}],
        }
        entries.append({k: v for k, v in entry.items() if v is not None})
    return {
        "schema": "insite-manifest/1",
        "project": PROJECT,
        "run": {"name": "demo", "settings_digest": "0" * 64, "round": 2},
        "answers": {**ANSWERS, **(answers or {})},
        "assets": entries,
    }


@pytest.fixture
def write_manifest(tmp_path: Path) -> Callable[..., Path]:
    """Write a manifest (see :func:`manifest_document` for the arguments) and return its path."""

    def write(**kwargs: Any) -> Path:
        path = tmp_path / "manifest.toml"
        path.write_text(tomli_w.dumps(manifest_document(tmp_path, **kwargs), multiline_strings=True))
        return path

    return write
