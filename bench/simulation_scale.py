"""Simulated consortia of 10, 50 and 100 sites: rounds per minute and the coordinator's peak memory.

Runs ``insite simulate`` (Flower's simulation engine, Ray) once per size and draw, each in its own
process so each peak is its own, with the shipped configs/simulation.toml (a 4.7M-parameter UNet,
FedAvg, plain aggregation). At a fixed draw of sites per round the coordinator's memory should not
grow with the consortium; the second draw shows what one more site per round costs it.

    python -m bench.simulation_scale [--sites 10 50 100] [--per-round 10 20] [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

SIMULATE_LIMIT_S = 3600  # one size's whole simulation; beyond it the run has failed, not slowed


def run_size(sites: int, per_round: int, rounds: int, workspace: Path) -> dict:
    """One ``insite simulate`` run; its simulation.json."""
    command = [
        sys.executable,
        "-c",
        "from insite.cli import main; main()",
        "simulate",
        "--sites",
        str(sites),
        "--per-round",
        str(per_round),
        "--rounds",
        str(rounds),
        "--workspace",
        str(workspace),
    ]
    print(f"{sites} sites, {per_round} per round: {' '.join(command[3:])}", flush=True)
    subprocess.run(command, check=True, timeout=SIMULATE_LIMIT_S)
    return dict(json.loads((workspace / "simulation.json").read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sites", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--per-round", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--work", type=Path, default=Path("/tmp/insite-simulation-scale"))
    parser.add_argument("--keep", action="store_true", help="Keep the synthetic sites and runs afterwards.")
    args = parser.parse_args()

    results = [
        run_size(n, k, args.rounds, args.work / f"sites-{n}") for k in args.per_round for n in args.sites if k <= n
    ]
    print("\n| sites | per round | rounds | rounds/min (all) | rounds/min (after round 1) | coordinator peak RSS |")
    print("|---:|---:|---:|---:|---:|---:|")
    for result in results:
        print(
            f"| {result['sites']} | {result['sites_per_round']} | {result['rounds']} | "
            f"{result['rounds_per_minute']:.1f} | {result['rounds_per_minute_after_first']:.1f} | "
            f"{result['coordinator_peak_rss_mb']:.0f} MB |"
        )
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
