"""Configuration at the edge: strict pydantic models, TOML reading, one-line validation errors.

Every settings file of the project (run settings, a site's settings, the consortium's, the
de-identification profile, the shared-assets manifest) is parsed through these, so a typo is
always an error that names the file and the key, worded the same way everywhere.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from common.errors import ConfigError

# A site's name is a file name at the coordinator (sites/<name>.pub) and a label in every report.
SITE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Frozen, and an unknown key is an error instead of a silently ignored setting."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def describe_validation_error(error: ValidationError, source: str) -> str:
    """One line naming the source and every bad or unknown key, so the CLI can print it as is."""
    problems = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            problems.append(f"unknown setting '{where}'")
        else:
            problems.append(f"'{where}': {item['msg']}")
    return f"{source}: " + "; ".join(problems)


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file, turning a missing or malformed file into a ConfigError that names it."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from None


def read_table(path: Path, table: str) -> dict[str, Any]:
    """The one ``[table]`` a settings file must consist of."""
    data = read_toml(path)
    if not isinstance(data.get(table), dict) or set(data) != {table}:
        raise ConfigError(f"{path}: expected exactly one [{table}] table")
    return data[table]


def validated(model: type[M], data: Any, source: str) -> M:
    """``model`` from ``data``; a failure becomes a :class:`ConfigError` naming ``source``."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, source)) from None
