"""What a site's scoring costs: Dice only (the rounds' scoring) against Dice + HD95 (``insite coord evaluate``).

One synthetic demo site, the run config's model (fresh weights: the cost does not depend on how good
the model is, except that an empty prediction skips the distance transform, so the weights are
those of a briefly trained model), the site's real ``SiteRound`` on its held-out cases, interleaved
(Dice, Dice + HD95, Dice, ...) so machine noise hits both alike. HD95 is MONAI's
``HausdorffDistanceMetric(percentile=95)``; it needs scipy.

    python -m bench.evaluation_cost [--config configs/federation.toml] [--cases 8] [--size 48] [--repeats 3]

Reported: seconds per held-out case of each, and the share HD95 adds (measured here, 8 cases of 48^3,
2 shared cores: 0.80 s and 0.78 s per case, i.e. within noise; inference dominates).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from client.local_round import SiteRound
from client.site import SiteContext
from common.model import build_model
from common.settings import load_run_settings
from configs import shipped
from deploy.demo.synthetic_sites import DEMO_SITES, write_site


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=shipped("federation.toml"))
    parser.add_argument("--cases", type=int, default=8, help="held-out cases of the site")
    parser.add_argument("--size", type=int, default=48, help="edge of each synthetic volume, voxels")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-rounds", type=int, default=2, help="rounds the model trains first (non-empty masks)")
    args = parser.parse_args()
    settings = load_run_settings(args.config)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        site = SiteContext("site-a", root / "data", root / "cache", "auto", torch.get_num_threads())
        write_site(DEMO_SITES[0], site.data_path, 4, args.cases, size=args.size)
        job = SiteRound.prepare(site, settings)
        torch.manual_seed(settings.seed)
        weights = build_model(settings.model).state_dict()
        for round_number in range(1, args.train_rounds + 1):
            weights, _ = job.train(weights, round_number)
        job.evaluate(weights)  # warm the site's preprocessing cache
        timings: dict[str, list[float]] = {"Dice only (rounds)": [], "Dice + HD95 (evaluate)": []}
        scores = {}
        for _ in range(args.repeats):
            for label, score in (
                ("Dice only (rounds)", job.evaluate),
                ("Dice + HD95 (evaluate)", job.evaluate_held_out),
            ):
                started = time.perf_counter()
                scores[label] = score(weights)
                timings[label].append((time.perf_counter() - started) / args.cases)
    print(f"{args.cases} held-out cases of {args.size}^3, {torch.get_num_threads()} threads, model {settings.model}")
    for label, values in timings.items():
        print(f"{label:<24} {statistics.median(values):.3f} s per case (median of {args.repeats}); {scores[label]}")
    dice_only, with_hd95 = (statistics.median(values) for values in timings.values())
    print(f"HD95 adds {100 * (with_hd95 / dice_only - 1):.0f}% to a site's scoring")


if __name__ == "__main__":
    main()
