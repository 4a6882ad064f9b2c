"""What a site knows about itself inside the ClientApp, from the SuperNode's ``--node-config``.

The coordinator never sees these values: the data path and cache path are the site's own, and the
compute choice is the site administrator's.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

from common.errors import ConfigError
from common.settings import StatsSettings

REQUIRED = ("site-name", "data-path", "cache-path")
DEFAULT_STATS_MIN_COUNT = StatsSettings().min_count


@dataclass(frozen=True)
class SiteContext:
    name: str
    data_path: Path
    cache_path: Path
    device: str
    threads: int
    stats_min_count: int = DEFAULT_STATS_MIN_COUNT  # the site's own floor for withheld statistics

    @classmethod
    def from_node_config(cls, node_config: dict) -> SiteContext:
        missing = [key for key in REQUIRED if not node_config.get(key)]
        if missing:
            raise ConfigError(f"SuperNode node-config lacks {missing}; start the site with 'insite site join'")
        return cls(
            name=str(node_config["site-name"]),
            data_path=Path(str(node_config["data-path"])),
            cache_path=Path(str(node_config["cache-path"])),
            device=str(node_config.get("device", "auto")),
            threads=int(node_config.get("threads", 0)),
            stats_min_count=int(node_config.get("stats-min-count", DEFAULT_STATS_MIN_COUNT)),
        )

    def seed(self, base: int, round_number: int) -> int:
        """A per-site, per-round seed: sites crop differently, and each round differently."""
        return (base * 1_000_003 + round_number * 7919 + zlib.crc32(self.name.encode())) % 2**31

    def to_node_config(self) -> str:
        """The ``--node-config`` string for ``flower-supernode``."""
        return (
            f'site-name="{self.name}" data-path="{self.data_path}" '
            f'cache-path="{self.cache_path}" device="{self.device}" threads={self.threads} '
            f"stats-min-count={self.stats_min_count}"
        )
