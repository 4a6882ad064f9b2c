"""Every branch of seed 000's two decision trees, with the outcome the seed prescribes."""

from __future__ import annotations

import pytest

from publication.manifest.schema import Answers, AssetTerms
from publication.manifest.trees import PublicationOutcome, decide

BASE = {"commercialise": False, "funding": "allows", "ethics": "allows", "dua_required": False}


def outcome(kind: str, role: str | None = None, **answers: object) -> PublicationOutcome:
    asset = AssetTerms(kind=kind, role=role, access="public", licence="MIT")
    return decide(asset, Answers(**{**BASE, **answers})).outcome


# Sharing model code: 1. commercialisation, 2a/2b. funding source (+ exemption alternatives).
CODE_TREE = [
    ("not commercial, funder allows", "architecture", None, {}, PublicationOutcome.PUBLISH),
    ("not commercial, funder requires", "code", "inference", {"funding": "requires"}, PublicationOutcome.PUBLISH),
    ("commercial: request exemption", "weights", None, {"commercialise": True}, PublicationOutcome.EXEMPTION),
    (
        "commercial, exemption denied: training code only",
        "code",
        "training",
        {"commercialise": True, "exemption_denied": True},
        PublicationOutcome.RESTRICTED,
    ),
    (
        "commercial, exemption denied: not the inference code",
        "code",
        "inference",
        {"commercialise": True, "exemption_denied": True},
        PublicationOutcome.DO_NOT_PUBLISH,
    ),
    (
        "commercial, exemption denied: not the weights",
        "weights",
        None,
        {"commercialise": True, "exemption_denied": True},
        PublicationOutcome.DO_NOT_PUBLISH,
    ),
    (
        "funder restricts: request exemption",
        "environment",
        None,
        {"funding": "restricts"},
        PublicationOutcome.EXEMPTION,
    ),
    (
        "funder restricts, exemption denied: training code only",
        "code",
        "training",
        {"funding": "restricts", "exemption_denied": True},
        PublicationOutcome.RESTRICTED,
    ),
    (
        "funder restricts, exemption denied: delay",
        "architecture",
        None,
        {"funding": "restricts", "exemption_denied": True},
        PublicationOutcome.DO_NOT_PUBLISH,
    ),
    (
        "weights: IRB with restrictions",
        "weights",
        None,
        {"ethics": "allows_with_restrictions"},
        PublicationOutcome.RESTRICTED,
    ),
    ("weights: IRB does not allow", "weights", None, {"ethics": "does_not_allow"}, PublicationOutcome.EXEMPTION),
    ("weights: DUA required", "weights", None, {"dua_required": True}, PublicationOutcome.RESTRICTED),
    ("code is not asked the IRB question", "code", "both", {"ethics": "does_not_allow"}, PublicationOutcome.PUBLISH),
]

# Sharing data: 1. commercialisation (exemption, subset), 2. funding, 3. IRB/institution, DUA.
DATA_TREE = [
    ("not commercial, funder and IRB allow", {}, PublicationOutcome.PUBLISH),
    ("funder requires", {"funding": "requires"}, PublicationOutcome.PUBLISH),
    ("commercial: request exemption", {"commercialise": True}, PublicationOutcome.EXEMPTION),
    (
        "commercial, exemption denied, subset possible",
        {"commercialise": True, "exemption_denied": True, "subset_possible": True},
        PublicationOutcome.RESTRICTED,
    ),
    (
        "commercial, exemption denied, no subset: delay",
        {"commercialise": True, "exemption_denied": True},
        PublicationOutcome.DO_NOT_PUBLISH,
    ),
    ("funder restricts", {"funding": "restricts"}, PublicationOutcome.EXEMPTION),
    ("IRB allows with restrictions", {"ethics": "allows_with_restrictions"}, PublicationOutcome.RESTRICTED),
    ("IRB does not allow", {"ethics": "does_not_allow"}, PublicationOutcome.EXEMPTION),
    ("DUA required", {"dua_required": True}, PublicationOutcome.RESTRICTED),
]


@pytest.mark.parametrize(
    ("kind", "role", "answers", "expected"), [case[1:] for case in CODE_TREE], ids=[case[0] for case in CODE_TREE]
)
def test_model_code_tree(kind, role, answers, expected):
    assert outcome(kind, role, **answers) == expected


@pytest.mark.parametrize(("answers", "expected"), [case[1:] for case in DATA_TREE], ids=[case[0] for case in DATA_TREE])
def test_data_tree(answers, expected):
    assert outcome("training_data", **answers) == expected


def test_path_records_every_answer_until_the_outcome_is_final():
    decision = decide(
        AssetTerms(kind="training_data", access="public"),
        Answers(**{**BASE, "funding": "restricts", "ethics": "does_not_allow"}),
    )
    assert decision.tree == "sharing data"
    assert [step.answer for step in decision.path] == ["no", "no (restricts)"]  # IRB never asked
    assert "funding" in decision.path[-1].consequence


def test_asset_overrides_take_precedence_over_project_answers():
    asset = AssetTerms(kind="weights", access="dua", answers={"dua_required": True})
    assert decide(asset, Answers(**BASE)).outcome == PublicationOutcome.RESTRICTED
    assert decide(AssetTerms(kind="weights", access="dua"), Answers(**BASE)).outcome == PublicationOutcome.PUBLISH
