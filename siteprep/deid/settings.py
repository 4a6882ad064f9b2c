"""De-identification settings: the profile options a site enables and its pixel-safety rules.

Parsed once from the ``[deid]`` table of a TOML file (``configs/deid.toml``) into frozen pydantic
models that refuse unknown keys, in the style of :mod:`common.settings`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from pydantic import Field, model_validator

from common.errors import ConfigError
from common.validation import StrictModel, read_table, validated
from configs import shipped
from siteprep.deface.settings import DefaceSettings

SHIPPED_PROFILE = shipped("deid.toml")


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
            raise ValueError(
                "retain_longitudinal_full_dates and retain_longitudinal_modified_dates "
                "exclude each other (PS3.15 E.3.6); enable one"
            )
        return self

    def enabled(self) -> list[str]:
        return [name for name, on in self.model_dump().items() if on]


class SafePrivate(StrictModel):
    """One allow-listed private attribute: its block's creator, group and element byte (E.3.10)."""

    creator: str = Field(min_length=1)
    group: int = Field(ge=0x0009, le=0xFFFF, description="odd group number, e.g. 0x0019")
    element: int = Field(ge=0x00, le=0xFF, description="the low byte of the element (xx in gggg,bbxx)")


class BurnedInText(StrictModel):
    """OCR redaction of burned-in text, for the objects :class:`PixelSafety` flags (PS3.15 E.3.1).

    Off by default: OCR verification proves only that the OCR engine reads no text left, so
    releasing objects that used to be quarantined is the site's decision to make, after it has
    looked at a sample; and sites without tesseract keep today's behaviour.
    """

    enabled: bool = Field(default=False, description="clean flagged objects by OCR redaction instead of quarantining")
    allowed_tokens: tuple[str, ...] = Field(
        default=(), description="harmless words (e.g. 'cm', 'MHz', 'TGC') left in place; never the object's identifiers"
    )
    padding: int = Field(default=4, ge=0, le=64, description="pixels added around each detected word before filling")
    cine_frames: int = Field(
        default=5, ge=1, le=64, description="frames of a multi-frame object read for text, evenly spaced first to last"
    )
    min_confidence: float = Field(
        default=50.0, ge=0, le=100, description="verification: words read with less confidence are OCR noise"
    )
    max_redacted_fraction: float = Field(
        default=0.3, gt=0, le=1, description="more of a frame than this under text: a document, quarantined"
    )
    clean_colour_captures: bool = Field(
        default=False,
        description="also clean colour (RGB, YBR, palette) objects other than ultrasound: off, because a colour "
        "capture may be a photograph or a 3D rendering that shows a face, which OCR cannot see "
        "(pydicom's OT-PAL-8-face.dcm is a face photograph stored as a secondary capture)",
    )
    keep_quarantined_modalities: tuple[str, ...] = Field(
        default=("XC", "SM"), description="modalities OCR cannot make safe (photographs, slide labels with barcodes)"
    )


class PixelSafety(StrictModel):
    """When an object is likely to carry burned-in identifiers (PS3.15 E.3.1 Clean Pixel Data)."""

    risky_modalities: tuple[str, ...] = ("US", "OT", "XC", "ES", "DOC", "SC", "GM", "SM", "XA", "IO")
    min_distinct_levels: int = Field(default=5, ge=1, description="fewer grey levels than this = text-like")
    min_intensity_std: float = Field(default=1.0, ge=0, description="sampled std below this = near-blank")
    blank_outside_ultrasound_regions: bool = Field(
        default=False, description="clean US images by blanking every pixel outside SequenceOfUltrasoundRegions"
    )
    burned_in_text: BurnedInText = BurnedInText()


SITE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class DeidSettings(StrictModel):
    """A site's de-identification settings; the key file never lives inside the output folder."""

    site: str | None = Field(
        None,
        pattern=SITE_NAME,
        description="this site's name; the key file's authenticated header names it, so another "
        "site's key file is refused (the shipped profile has none: the key's header is trusted)",
    )
    key_file: Path | None = Field(
        None,
        description="the site's pseudonymisation key, encrypted; the shipped "
        "profile has none, a site's own settings ('insite site init') do",
    )
    passphrase_file: Path | None = Field(
        None,
        description="a file (0600) holding the key file's passphrase, for scripts and services; "
        "INSITE_DEID_PASSPHRASE and --passphrase-file come first",
    )
    subject_prefix: str = Field(default="SUBJ", pattern=r"^[A-Z0-9]{1,8}$")
    options: ProfileOptions = ProfileOptions()
    safe_private: tuple[SafePrivate, ...] = ()
    pixels: PixelSafety = PixelSafety()
    deface: DefaceSettings = DefaceSettings()
    workers: int | None = Field(
        None,
        ge=1,
        description=("processes de-identifying in parallel; default one per CPU, for runs of 64+ files per process"),
    )

    @model_validator(mode="after")
    def _allow_list_needs_option(self) -> DeidSettings:
        if self.safe_private and not self.options.retain_safe_private:
            raise ValueError("safe_private entries need options.retain_safe_private = true")
        return self


def load_deid_settings(path: Path) -> DeidSettings:
    """Read the ``[deid]`` table; relative ``key_file`` and ``passphrase_file`` are taken from the file's folder."""
    settings = validated(DeidSettings, read_table(path, "deid"), str(path))
    if settings.passphrase_file is not None:
        settings = settings.model_copy(update={"passphrase_file": _resolved(settings.passphrase_file, path.parent)})
    if settings.key_file is None:
        return settings
    return with_key_file(settings, settings.key_file, path.parent)


def _resolved(path: Path, base: Path) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def with_key_file(settings: DeidSettings, key_file: Path, base: Path) -> DeidSettings:
    """``settings`` using ``key_file`` (``~`` expanded, relative to ``base``)."""
    return settings.model_copy(update={"key_file": _resolved(key_file, base)})


def site_deid_settings(config: Path | None, key_file: Path | None) -> DeidSettings:
    """The settings a site de-identifies with: its own file, else the shipped profile, plus a key.

    The profile is the same everywhere; the key is the site's own, so it must be named: in the
    site's settings file, or with ``key_file``.
    """
    settings = load_deid_settings(config or SHIPPED_PROFILE)
    if key_file is not None:
        settings = with_key_file(settings, key_file, Path.cwd())
    if settings.key_file is None:
        raise ConfigError(
            f"{config or 'the shipped profile'}: no key file named. The site's pseudonymisation key "
            "(pseudonyms, date offsets, UID secret) is needed: make the site's settings with 'insite "
            "site init --site NAME' and pass --config deid.toml, or pass --key-file PATH (an "
            "encrypted key, 0600; keep it outside the output folder and back it up)"
        )
    return settings


def check_site_name(site: str) -> str:
    """``site`` if it can name a site (:data:`SITE_NAME`), else a :class:`ConfigError` saying why."""
    if not re.fullmatch(SITE_NAME, site):
        raise ConfigError(f"site name {site!r}: letters, digits, '.', '_' and '-' only (up to 64), as registered")
    return site


SITE_KEY_FILE = "deid-key.enc"  # the name 'insite site init' gives a site's key file


def site_settings_file(folder: Path) -> Path:
    """Where ``insite site init`` writes the site's ``deid.toml``; refused if one is there already."""
    config = folder / "deid.toml"
    if config.exists():
        raise ConfigError(f"{config}: exists already; edit it, or choose another folder")
    return config


def write_site_settings(
    folder: Path, site: str, key_file: str = SITE_KEY_FILE, passphrase_file: str | None = None
) -> Path:
    """The site's own ``deid.toml``: the shipped profile, naming the site and its key file kept beside it."""
    config = site_settings_file(folder)
    check_site_name(site)
    text = SHIPPED_PROFILE.read_text(encoding="utf-8")
    fills = {"site": site, "key_file": key_file}
    if passphrase_file is not None:
        fills["passphrase_file"] = passphrase_file
    for name, value in fills.items():
        text, found = re.subn(rf"^# {name} = .*$", f"{name} = {json.dumps(value)}", text, count=1, flags=re.MULTILINE)
        if not found:
            raise ConfigError(f"{SHIPPED_PROFILE}: has no '# {name} = ...' line to fill in")
    folder.mkdir(parents=True, exist_ok=True)
    config.write_text(text, encoding="utf-8")
    return config
