"""Round overhead: a real federation's round wall time beside the slowest site's local training.

Runs, in one invocation and on the same machine state, real loopback federations (SuperLink +
three SuperNodes, TLS, node authentication, the demo's synthetic sites), each with SecAgg+ (the
default: two exchanges per round, the next round's key exchange inside them) and with plain
aggregation (one exchange), so the cost of secure aggregation shows beside the rest:

1. the demo configuration (configs/federation.toml, ``--rounds`` rounds): per round, the wall
   time at the coordinator beside the slowest site's pure training time in the same round; the
   rest (message delivery, ClientApp process start, data and model set-up, scoring the incoming
   model, aggregation, checkpoint) is the overhead, reported as a share of the round;
2. a floor run: the same machinery with a tiny model and one training step on tiny volumes, so
   its round time is the framework's own floor, to set beside Flower's polling floor (~10 s per
   round measured in shared/notes/flower.md).

    python -m bench.round_overhead [--rounds 3] [--work /tmp/insite-round-bench]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from common.run_record import RunRecord
from common.settings import RunSettings, load_run_settings
from configs import shipped
from deploy.demo.synthetic_sites import DEMO_SITES, write_site
from deploy.demo.workspace import Workspace, provision_demo, run_demo_federation

FLOOR = {
    "training": {"local_steps": 1, "batch_size": 1, "patch_size": 16},
    "model": {"channels": [4, 8], "strides": [2]},
}


@contextmanager
def environment(overrides: dict[str, str]) -> Iterator[None]:
    """``overrides`` in this process's environment (which every Flower process started here inherits), then restored."""
    saved = {key: os.environ.get(key) for key in overrides}
    os.environ.update(overrides)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def federation(root: Path, settings: RunSettings, train: int, val: int, size: int) -> list[dict]:
    """Run a fresh three-site federation under ``root``; returns its round rows."""
    if root.exists():
        shutil.rmtree(root)
    space = Workspace(root)
    for profile in DEMO_SITES:
        write_site(profile, space.site_dir(profile.name) / "data", train, val, size, settings.seed)
    provision_demo(space, [p.name for p in DEMO_SITES])
    RunRecord(space.run_dir).create("bench", settings, transport={"tls": True, "node_auth": True})
    run_demo_federation(
        space,
        settings,
        on_event=lambda text: print(f"  {text}", flush=True),
        on_round=lambda row: print(f"  round {row['round']} closed", flush=True),
    )
    return RunRecord(space.run_dir).rounds()


def report(name: str, rows: list[dict]) -> None:
    print(f"\n{name}")
    print("  round  wall s  slowest site training s  overhead s  overhead share")
    shares = []
    for row in rows:
        slowest = max(site["train_seconds"] for site in row["sites"].values())
        overhead = row["wall_s"] - slowest
        shares.append(overhead / row["wall_s"])
        print(f"  {row['round']:5d}  {row['wall_s']:6.1f}  {slowest:24.1f}  {overhead:10.1f}  {shares[-1]:14.0%}")
    later = rows[1:] or rows  # round 1 also fills the sites' preprocessing caches
    print(
        f"  median round wall (rounds 2+): {statistics.median(r['wall_s'] for r in later):.1f} s; "
        f"median overhead share: {statistics.median(shares[1:] or shares):.0%}"
    )
    if "eval_exchange_s" in rows[-1]:
        print(f"  final scoring exchange: {rows[-1]['eval_exchange_s']:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=shipped("federation.toml"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/insite-round-bench"))
    args = parser.parse_args()
    demo = load_run_settings(args.config).model_copy(update={"rounds": args.rounds, "min_sites": 3})
    floor = RunSettings.model_validate({**FLOOR, "rounds": args.rounds, "min_sites": 3})
    runs = []
    for name, settings, data in (
        ("demo configuration", demo, (48, 8, 48)),
        ("floor (tiny model, 1 step, 32^3 volumes)", floor, (2, 1, 32)),
    ):
        for mode in ("secagg+", "plain"):
            variant = settings.model_copy(
                update={"aggregation": settings.aggregation.model_copy(update={"mode": mode})}
            )
            label = f"{name}, {mode}"
            print(label, flush=True)
            slug = f"{'demo' if settings is demo else 'floor'}-{mode.rstrip('+')}"
            runs.append((label, federation(args.work / slug, variant, *data)))
    for label, rows in runs:
        report(label, rows)


if __name__ == "__main__":
    main()
