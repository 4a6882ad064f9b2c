"""Seed 000's two decision trees ("Sharing Data", "Sharing Model Code"), evaluated per asset.

Each tree is a walk through its sections in the seed's order (commercialisation, funding source,
IRB/institution, data use agreement). Every question answered adds a :class:`Step` to the path, and
may raise the outcome; the walk stops as soon as the outcome is "request an exemption" or "do not
publish", because later questions cannot make it publishable again. The outcome is the most
restrictive one reached.

Which tree: training data takes the data tree; architecture, environment, code and weights take the
model-code tree. Two additions by insite, shown as such in the path: weights are learned from
patient data, so the data tree's IRB question and the DUA question are asked of them as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from publication.manifest.schema import Answers, AssetTerms


class PublicationOutcome(IntEnum):
    """Ordered from least to most restrictive."""

    PUBLISH = 0
    RESTRICTED = 1
    EXEMPTION = 2
    DO_NOT_PUBLISH = 3

    @property
    def title(self) -> str:
        return _OUTCOME_TITLES[self]


_OUTCOME_TITLES = {
    PublicationOutcome.PUBLISH: "may publish",
    PublicationOutcome.RESTRICTED: "publish with restrictions",
    PublicationOutcome.EXEMPTION: "request an exemption",
    PublicationOutcome.DO_NOT_PUBLISH: "do not publish",
}


@dataclass(frozen=True)
class Step:
    question: str
    answer: str
    consequence: str
    outcome: PublicationOutcome | None


@dataclass(frozen=True)
class Decision:
    kind: str
    tree: str
    outcome: PublicationOutcome
    path: tuple[Step, ...]


_COMMERCIALISE = "Do you plan to commercialise the model, or is there potential IP value in it?"
_EXEMPTION_DENIED = "Was the journal's exemption request denied?"
_CODE_FUNDING = "Does the funding source require, allow or restrict sharing of model code?"
_DATA_FUNDING = "Does the funding source allow and/or require sharing of the data?"
_IRB = "Does the IRB/institution allow sharing of the data?"
_IRB_WEIGHTS = "[insite: weights are learned from the data] Does the IRB/institution allow sharing?"
_DUA = "Is a data use agreement required by the funder, institution or sharing platform?"
_SUBSET = "Can you share a subset of the data?"
_TRAINING_ONLY = "Is this asset the training code alone (no weights, no inference code)?"


class _Walk:
    """Accumulates steps; ``done`` once the outcome can no longer become publishable."""

    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.outcome = PublicationOutcome.PUBLISH

    def step(self, question: str, answer: str, consequence: str, outcome: PublicationOutcome | None = None) -> None:
        """Record an answer; ``outcome`` None means the answer only leads to the next question."""
        if outcome is not None:
            self.outcome = max(self.outcome, outcome)
        self.steps.append(Step(question, answer, consequence, outcome))

    @property
    def done(self) -> bool:
        return self.outcome >= PublicationOutcome.EXEMPTION


def _code_alternative(walk: _Walk, asset: AssetTerms, answers: Answers) -> None:
    """Seed 000, model-code tree: ask for an exemption; if refused, share the training code only."""
    if not answers.exemption_denied:
        walk.step(
            _EXEMPTION_DENIED,
            "no (or not yet asked)",
            "request an exemption from the journal not to share the model code",
            PublicationOutcome.EXEMPTION,
        )
        return
    walk.step(_EXEMPTION_DENIED, "yes", "alternatives: share the training code only, or delay publication")
    if asset.kind == "code" and asset.role == "training":
        walk.step(
            _TRAINING_ONLY,
            "yes",
            "may share the training code only, without model weights",
            PublicationOutcome.RESTRICTED,
        )
    else:
        walk.step(
            _TRAINING_ONLY,
            "no",
            "delay publication until commercialisation activities have concluded",
            PublicationOutcome.DO_NOT_PUBLISH,
        )


def _model_code_tree(asset: AssetTerms, answers: Answers) -> _Walk:
    walk = _Walk()
    if answers.commercialise:
        walk.step(_COMMERCIALISE, "yes", "submit an Invention Disclosure Form and consider an exemption")
        _code_alternative(walk, asset, answers)
        return walk
    walk.step(
        _COMMERCIALISE, "no", "may comply with the journal's request; attach a licence", PublicationOutcome.PUBLISH
    )
    if answers.funding == "requires":
        walk.step(_CODE_FUNDING, "requires", "must comply with the funder's requirements", PublicationOutcome.PUBLISH)
    elif answers.funding == "allows":
        walk.step(_CODE_FUNDING, "allows", "may comply; check the funder's stipulations", PublicationOutcome.PUBLISH)
    else:
        walk.step(_CODE_FUNDING, "restricts", "the funder limits sharing (e.g. code is proprietary)")
        _code_alternative(walk, asset, answers)
        return walk
    if asset.kind == "weights":
        _irb(walk, answers, _IRB_WEIGHTS)
        if not walk.done:
            _dua(walk, answers)
    return walk


def _irb(walk: _Walk, answers: Answers, question: str) -> None:
    if answers.ethics == "allows":
        walk.step(question, "allows", "consistent with the approved protocol", PublicationOutcome.PUBLISH)
    elif answers.ethics == "allows_with_restrictions":
        walk.step(
            question,
            "allows with restrictions",
            "may share if the IRB's stipulations are met",
            PublicationOutcome.RESTRICTED,
        )
    else:
        walk.step(question, "does not allow", "request an exemption from sharing", PublicationOutcome.EXEMPTION)


def _dua(walk: _Walk, answers: Answers) -> None:
    if answers.dua_required:
        walk.step(_DUA, "yes", "share on request under a data use agreement only", PublicationOutcome.RESTRICTED)
    else:
        walk.step(_DUA, "no", "no agreement needed", PublicationOutcome.PUBLISH)


def _data_tree(answers: Answers) -> _Walk:
    walk = _Walk()
    if answers.commercialise:
        walk.step(_COMMERCIALISE, "yes", "request an exemption from the journal not to share the data")
        if not answers.exemption_denied:
            walk.step(
                _EXEMPTION_DENIED,
                "no (or not yet asked)",
                "request an exemption from the journal",
                PublicationOutcome.EXEMPTION,
            )
            return walk
        walk.step(_EXEMPTION_DENIED, "yes", "consider sharing a subset of the data")
        if not answers.subset_possible:
            walk.step(
                _SUBSET,
                "no",
                "delay publication until commercialisation activities have concluded",
                PublicationOutcome.DO_NOT_PUBLISH,
            )
            return walk
        walk.step(_SUBSET, "yes", "may share a subset of the data", PublicationOutcome.RESTRICTED)
    else:
        walk.step(_COMMERCIALISE, "no", "may comply with the journal's request", PublicationOutcome.PUBLISH)
    if answers.funding == "restricts":
        walk.step(
            _DATA_FUNDING,
            "no (restricts)",
            "request an exemption from sharing due to funding source restrictions",
            PublicationOutcome.EXEMPTION,
        )
        return walk
    walk.step(
        _DATA_FUNDING, f"yes ({answers.funding})", "consistent with the funding source", PublicationOutcome.PUBLISH
    )
    _irb(walk, answers, _IRB)
    if not walk.done:
        _dua(walk, answers)
    return walk


def decide(asset: AssetTerms, project_answers: Answers) -> Decision:
    """Walk the tree that applies to ``asset`` with the project's answers and the asset's overrides."""
    answers = project_answers.with_overrides(asset.answers)
    if asset.kind == "training_data":
        tree, walk = "sharing data", _data_tree(answers)
    else:
        tree, walk = "sharing model code", _model_code_tree(asset, answers)
    return Decision(asset.kind, tree, walk.outcome, tuple(walk.steps))
