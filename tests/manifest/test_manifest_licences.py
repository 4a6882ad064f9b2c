"""Licences: SPDX identifiers, Creative Commons for weights and data, or a custom text (seed 003)."""

from __future__ import annotations

import pytest

from publication.manifest.licences import licence_problem
from publication.manifest.schema import AssetTerms

# Seed 003's "AIDA BY" terms, adapted to model weights: purpose restriction plus attribution.
PURPOSE_RESTRICTED = """Copyright 2026 Example Consortium

Permission to use, copy, modify, and/or distribute these model weights for the purpose of medical
imaging research with or without fee is hereby granted, provided that the above copyright notice and
this permission notice appear in all copies, and that publications resulting from the use of these
weights cite the following publications: <this model> <paper 1>

THE WEIGHTS ARE PROVIDED "AS IS" AND THE AUTHOR DISCLAIMS ALL WARRANTIES."""


def problem(kind: str, licence: str | None, text: str | None = None) -> str | None:
    role = "inference" if kind == "code" else None
    return licence_problem(AssetTerms(kind=kind, role=role, access="public", licence=licence, licence_text=text))


@pytest.mark.parametrize(
    ("kind", "licence"),
    [
        ("architecture", "Apache-2.0"),
        ("code", "BSD-3-Clause"),
        ("code", "GPL-3.0-only"),
        ("environment", "MIT"),
        ("weights", "CC-BY-4.0"),
        ("weights", "CC-BY-NC-SA-4.0"),
        ("training_data", "CC0-1.0"),
    ],
)
def test_known_licences_pass(kind, licence):
    assert problem(kind, licence) is None


def test_missing_licence():
    assert "no licence" in problem("weights", None)


def test_unknown_identifier():
    assert "not a known SPDX identifier" in problem("code", "Apache-3.0")


def test_software_licence_on_weights_is_refused():
    assert "Creative Commons" in problem("weights", "MIT")


def test_custom_licence_needs_its_text():
    assert "needs its full text" in problem("weights", "LicenseRef-aida-by")
    assert problem("weights", "LicenseRef-aida-by", PURPOSE_RESTRICTED) is None


def test_text_only_with_a_custom_identifier():
    assert "only for custom" in problem("weights", "CC-BY-4.0", PURPOSE_RESTRICTED)
