"""The shared-assets manifest: what a run's researchers propose to publish, and on what terms.

A manifest is a TOML file validated here once, with unknown keys refused. It names the project,
consortium and run; the answers to seed 000's decision-tree questions; and one entry per shared
asset, in seed 000's order of increasing risk (architecture with hyperparameters, executable
environment, training and/or inference code, weights, training data). Each asset pins its files by
SHA-256, so approving the manifest approves those exact bytes.

A template (``configs/manifest.toml``) has the same shape without ``[run]`` and without files; the
``draft`` step fills both in from a run directory.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Final, Literal

from pydantic import Field, ValidationError, model_validator

from common.errors import ManifestError
from common.validation import StrictModel, describe_validation_error

SCHEMA: Final = "insite-manifest/1"  # Final: its type is the literal, as Manifest.schema_ needs

AssetKind = Literal["architecture", "environment", "code", "weights", "training_data"]
#: seed 000, "Risk/Value of the Shared Assets", in order of increasing risk/value.
RISK_ORDER: tuple[AssetKind, ...] = ("architecture", "environment", "code", "weights", "training_data")
KIND_TITLES: dict[str, str] = {
    "architecture": "model architecture with hyperparameters",
    "environment": "executable file or environment",
    "code": "training and/or inference code",
    "weights": "model weights",
    "training_data": "training data",
}

AccessLevel = Literal["public", "dua", "consortium"]
ACCESS_TITLES: dict[str, str] = {
    "public": "public",
    "dua": "on request under a data use agreement",
    "consortium": "consortium members only",
}
Funding = Literal["requires", "allows", "restricts"]
RoundSelection = Literal["final", "best"]
Ethics = Literal["allows", "allows_with_restrictions", "does_not_allow"]


class AnswerOverrides(StrictModel):
    """Per-asset answers where one asset's situation differs from the project's (e.g. funder terms)."""

    commercialise: bool | None = None
    exemption_denied: bool | None = None
    subset_possible: bool | None = None
    funding: Funding | None = None
    ethics: Ethics | None = None
    dua_required: bool | None = None


class Answers(StrictModel):
    """Seed 000's questions, answered once for the project."""

    commercialise: bool = Field(description="plan to commercialise, or potential IP value in the model")
    exemption_denied: bool = Field(False, description="the journal denied a requested exemption")
    subset_possible: bool = Field(False, description="a subset of the data could be shared instead")
    funding: Funding = Field(description="the funding source requires, allows or restricts sharing")
    ethics: Ethics = Field(description="what the approved IRB/ethics review says about sharing")
    dua_required: bool = Field(description="a data use agreement is required (funder, institution, platform)")

    def with_overrides(self, overrides: AnswerOverrides) -> Answers:
        return self.model_copy(update=overrides.model_dump(exclude_none=True))


class AssetTerms(StrictModel):
    """How one asset may be shared: everything about it except its files."""

    kind: AssetKind
    description: str = ""
    role: Literal["training", "inference", "both"] | None = Field(
        None, description="for kind 'code': which code this is"
    )
    licence: str | None = Field(None, description="SPDX identifier, or LicenseRef-... with licence_text")
    licence_text: str | None = None
    access: AccessLevel
    embargo: date | None = None
    answers: AnswerOverrides = AnswerOverrides()

    @model_validator(mode="after")
    def _role_only_for_code(self) -> AssetTerms:
        if self.kind == "code" and self.role is None:
            raise ValueError("a 'code' asset needs role = 'training', 'inference' or 'both'")
        if self.kind != "code" and self.role is not None:
            raise ValueError(f"'role' applies only to code assets, not to '{self.kind}'")
        return self


class AssetFile(StrictModel):
    path: str = Field(min_length=1, description="relative to the manifest's folder, or absolute")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Asset(AssetTerms):
    files: list[AssetFile] = Field(min_length=1)


class Project(StrictModel):
    """Who publishes what: this becomes the bundle's metadata and model card."""

    name: str = Field(min_length=1)
    consortium: str = Field(min_length=1)
    title: str = Field(min_length=1)
    task: str = Field(min_length=1)
    description: str = Field(min_length=1)
    intended_use: str = Field(min_length=1)
    authors: list[str] = Field(min_length=1)
    copyright: str = Field(min_length=1)
    version: str = Field("0.1.0", pattern=r"^\d+\.\d+\.\d+$")
    label_classes: list[str] = Field(min_length=2, description="class names by output channel")


class RunReference(StrictModel):
    """The run whose consensus model the manifest is about."""

    name: str
    settings_digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    round: int = Field(ge=1, description="the round whose checkpoint is the consensus model")
    selection: RoundSelection = Field(
        "final", description="why that round: the run's final round, or the round with the best global Dice"
    )


def _check_asset_order(assets: list[AssetTerms]) -> None:
    kinds = [asset.kind for asset in assets]
    if len(set(kinds)) != len(kinds):
        raise ValueError("each asset kind may appear once; merge the files of a kind into one entry")
    if kinds != sorted(kinds, key=RISK_ORDER.index):
        raise ValueError(f"assets must follow seed 000's order of increasing risk {list(RISK_ORDER)}, got {kinds}")


class Template(StrictModel):
    """``configs/manifest.toml``: the human-written part of a manifest."""

    project: Project
    answers: Answers
    assets: list[AssetTerms] = Field(min_length=1)

    @model_validator(mode="after")
    def _ordered(self) -> Template:
        _check_asset_order(list(self.assets))
        return self


class Manifest(StrictModel):
    schema_: Literal["insite-manifest/1"] = Field(SCHEMA, alias="schema")
    project: Project
    run: RunReference
    answers: Answers
    assets: list[Asset] = Field(min_length=1)

    @model_validator(mode="after")
    def _ordered(self) -> Manifest:
        _check_asset_order(list(self.assets))
        return self

    def asset(self, kind: str) -> Asset | None:
        return next((asset for asset in self.assets if asset.kind == kind), None)


@dataclass(frozen=True)
class LoadedManifest:
    """A parsed manifest with the exact bytes it came from (approvals sign those bytes)."""

    path: Path
    raw: bytes
    manifest: Manifest

    def resolve(self, file: AssetFile) -> Path:
        path = Path(file.path)
        return path if path.is_absolute() else self.path.parent / path


def _parse_toml(raw: bytes, source: Path) -> dict:
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ManifestError(f"{source}: not valid TOML ({error})") from None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(f"{path}: manifest not found") from None


def parse_manifest(raw: bytes, path: Path) -> LoadedManifest:
    try:
        manifest = Manifest.model_validate(_parse_toml(raw, path))
    except ValidationError as error:
        raise ManifestError(describe_validation_error(error, str(path))) from None
    return LoadedManifest(path, raw, manifest)


def load_manifest(path: Path) -> LoadedManifest:
    return parse_manifest(_read(path), path)


def load_template(path: Path) -> Template:
    try:
        return Template.model_validate(_parse_toml(_read(path), path))
    except ValidationError as error:
        raise ManifestError(describe_validation_error(error, str(path))) from None
