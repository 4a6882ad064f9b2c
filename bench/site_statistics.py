"""How long a site takes to compute its data statistics ('insite coord stats'), per case and volume size.

Writes the demo's site-c (CT, raw units over a range wider than 12 bits) at a few volume edges and
times :func:`client.statistics.site_statistics` over it: what a site's ClientApp spends before it
answers (reading each image and label, the intensity histogram, connected lesion components).
The statistics request waits ``round_timeout_s`` for it; this says whether that is enough.

    python -m bench.site_statistics [--cases 6] [--sizes 64 128 192] [--work /tmp/stats-bench]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from client.statistics import site_statistics
from common.settings import StatsSettings
from deploy.demo.synthetic_sites import DEMO_SITES, write_site


def measure(work: Path, cases: int, size: int) -> dict[str, float]:
    profile = DEMO_SITES[2]
    folder = work / f"{profile.name}-{size}"
    shutil.rmtree(folder, ignore_errors=True)
    write_site(profile, folder, cases, 0, size=size)
    started = time.perf_counter()
    site_statistics(profile.name, folder, StatsSettings())
    seconds = time.perf_counter() - started
    return {"edge": size, "cases": cases, "seconds": round(seconds, 3), "seconds_per_case": round(seconds / cases, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 192])
    parser.add_argument("--work", type=Path, default=Path("/tmp/stats-bench"))
    arguments = parser.parse_args()
    results = [measure(arguments.work, arguments.cases, size) for size in arguments.sizes]
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
