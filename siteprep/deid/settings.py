"""De-identification settings: the profile options a site enables and its pixel-safety rules.

Parsed once from the ``[deid]`` table of a TOML file (``configs/deid.toml``) into frozen pydantic
models that refuse unknown keys, in the style of :mod:`common.settings`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from common.validation import StrictModel, read_table, validated


class ProfileOptions(StrictModel):
    """PS3.15 E.3 Confidentiality Profile options; each adds or changes a column of Table E.1-1.

    The names match the option columns of ``siteprep/deid/ps315_table.json``. Retain Longitudinal
    Temporal Information with Full Dates and with Modified Dates exclude each other (E.3.6).
    """

    retain_longitudinal_full_dates: bool = False
    retain_longitudinal_modified_dates: bool = True
    retain_patient_characteristics: bool = False
    retain_device_identity: bool = False
    retain_institution_identity: bool = False
    retain_uids: bool = False
    retain_safe_private: bool = False
    clean_descriptors: bool = False
    clean_graphics: bool = False
    clean_structured_content: bool = False

    @model_validator(mode="after")
    def _one_temporal_option(self) -> ProfileOptions:
        if self.retain_longitudinal_full_dates and self.retain_longitudinal_modified_dates:
            raise ValueError("retain_longitudinal_full_dates and retain_longitudinal_modified_dates "
                             "exclude each other (PS3.15 E.3.6); enable one")
        return self

    def enabled(self) -> list[str]:
        return [name for name, on in self.model_dump().items() if on]


class SafePrivate(StrictModel):
    """One allow-listed private attribute: its block's creator, group and element byte (E.3.10)."""

    creator: str = Field(min_length=1)
    group: int = Field(ge=0x0009, le=0xFFFF, description="odd group number, e.g. 0x0019")
    element: int = Field(ge=0x00, le=0xFF, description="the low byte of the element (xx in gggg,bbxx)")


class PixelSafety(StrictModel):
    """When an object is likely to carry burned-in identifiers (PS3.15 E.3.1 Clean Pixel Data)."""

    risky_modalities: tuple[str, ...] = ("US", "OT", "XC", "ES", "DOC", "SC", "GM", "SM", "XA", "IO")
    min_distinct_levels: int = Field(5, ge=1, description="fewer grey levels than this = text-like")
    min_intensity_std: float = Field(1.0, ge=0, description="sampled std below this = near-blank")
    blank_outside_ultrasound_regions: bool = Field(
        False, description="clean US images by blanking every pixel outside SequenceOfUltrasoundRegions"
    )


class DeidSettings(StrictModel):
    """A site's de-identification settings; the key file never lives inside the output folder."""

    key_file: Path
    subject_prefix: str = Field("SUBJ", pattern=r"^[A-Z0-9]{1,8}$")
    options: ProfileOptions = ProfileOptions()
    safe_private: tuple[SafePrivate, ...] = ()
    pixels: PixelSafety = PixelSafety()
    workers: int | None = Field(None, ge=1, description=(
        "processes de-identifying in parallel; default one per CPU, for runs of 64+ files per process"))

    @model_validator(mode="after")
    def _allow_list_needs_option(self) -> DeidSettings:
        if self.safe_private and not self.options.retain_safe_private:
            raise ValueError("safe_private entries need options.retain_safe_private = true")
        return self


def load_deid_settings(path: Path) -> DeidSettings:
    """Read the ``[deid]`` table; a relative ``key_file`` is taken relative to the file's folder."""
    settings = validated(DeidSettings, read_table(path, "deid"), str(path))
    key_file = settings.key_file.expanduser()
    return settings.model_copy(update={"key_file": key_file if key_file.is_absolute()
                                       else (path.parent / key_file).resolve()})
