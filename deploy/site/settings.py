"""A site's own settings (``site.toml``, from the coordinator's kit); they never leave the site."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from common.validation import SITE_NAME_PATTERN, StrictModel, read_table, validated

PATH_SETTINGS = ("data_path", "cache_path", "root_certificates", "private_key")


class SiteSettings(StrictModel):
    """What ``insite site join`` needs to run this site's SuperNode."""

    name: str = Field(pattern=SITE_NAME_PATTERN)
    data_path: Path
    cache_path: Path
    superlink: str = Field("127.0.0.1:9092", description="host:port of the coordinator's Fleet API")
    root_certificates: Path
    private_key: Path
    device: Literal["auto", "cuda", "cpu"] = "auto"
    threads: int = Field(0, ge=0, description="CPU threads for training; 0 = all cores")
    stats_min_count: int = Field(
        5, ge=2, description="this site withholds every statistic counted from 1 to this - 1, whatever the run asks"
    )
    node_port: int = Field(
        9094,
        ge=1,
        le=65535,
        description="the SuperNode's local port for its "
        "ClientApp processes (127.0.0.1 only); distinct per site on one host",
    )


def load_site_settings(path: Path) -> SiteSettings:
    """Read ``site.toml``; relative paths are taken relative to the file's folder."""
    settings = validated(SiteSettings, read_table(path, "site"), str(path))
    return settings.model_copy(update={key: (path.parent / getattr(settings, key)).resolve() for key in PATH_SETTINGS})
