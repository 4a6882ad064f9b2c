"""What secure aggregation costs: round time and bytes on the wire, TLS only vs TLS + SecAgg+.

One invocation runs, back to back on the same machine state, real loopback federations of three
sites (SuperLink behind the Fleet-only nginx proxy, TLS, node authentication, egress ledger) that
train a ~4.7M-parameter MONAI UNet (channels 32-64-128-256) on the demo's synthetic sites:

- TLS only (``aggregation.mode = "plain"``) and TLS + SecAgg+ (the default), each
- with insite's SuperNode poll (deploy/site/supernode_launcher.py: 0.5 s idle poll, 0.2 s SuperExec
  poll) and with Flower's stock poll (3 s and 1 s), to show what the launcher buys.

Per variant: the median round wall time at the coordinator (rounds 2+; round 1 also fills the
sites' caches), the slowest site's training time in those rounds, and the bytes through the proxy
(HTTP/2 requests and responses of all sites before TLS framing, from the proxy's access log)
divided by the rounds. That total includes the run's fixed traffic (app download, the final
scoring exchange, heartbeats); the model's own size is printed beside it for scale.

    python -m bench.secure_aggregation_cost [--rounds 3] [--steps 5] [--work /tmp/insite-secagg-bench]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from bench.round_overhead import environment, federation
from common.model import build_model
from common.settings import RunSettings, load_run_settings
from configs import shipped
from deploy.coordinator.proxy import ACCESS_LOG
from deploy.demo.workspace import Workspace
from deploy.site.supernode_launcher import IDLE_POLL_ENV, SUPEREXEC_POLL_ENV

MODEL = {"channels": [32, 64, 128, 256], "strides": [2, 2, 2]}
POLLS = {"insite poll": None, "Flower stock poll": {IDLE_POLL_ENV: "3", SUPEREXEC_POLL_ENV: "1.0"}}


def proxy_bytes(root: Path) -> int:
    """Request plus response bytes of every request the proxy relayed (log format in deploy/coordinator/proxy.py)."""
    total = 0
    for line in (Workspace(root).logs / ACCESS_LOG).read_text().splitlines():
        fields = line.split()
        total += int(fields[-3]) + int(fields[-2])
    return total


def run_variant(
    root: Path, settings: RunSettings, mode: str, poll: dict[str, str] | None, data: tuple[int, int, int]
) -> dict:
    variant = settings.model_copy(update={"aggregation": settings.aggregation.model_copy(update={"mode": mode})})
    with environment(poll or {}):
        rows = federation(root, variant, *data)
    later = rows[1:] or rows
    return {
        "wall": statistics.median(r["wall_s"] for r in later),
        "training": statistics.median(max(s["train_seconds"] for s in r["sites"].values()) for r in later),
        "bytes_per_round": proxy_bytes(root) / len(rows),
        "final_exchange": rows[-1].get("eval_exchange_s", 0.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=shipped("federation.toml"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="local training steps per round")
    parser.add_argument("--work", type=Path, default=Path("/tmp/insite-secagg-bench"))
    args = parser.parse_args()
    base = load_run_settings(args.config)
    settings = base.model_copy(
        update={
            "rounds": args.rounds,
            "min_sites": 3,
            "model": base.model.model_validate(MODEL),
            "training": base.training.model_copy(update={"local_steps": args.steps}),
        }
    )
    parameters = sum(t.numel() for t in build_model(settings.model).state_dict().values())
    print(
        f"model: {parameters / 1e6:.2f}M parameters = {parameters * 4 / 1e6:.1f} MB as float32; "
        f"{args.rounds} rounds x {args.steps} steps, 3 sites",
        flush=True,
    )
    results = {}
    for poll_name, poll in POLLS.items():
        for mode in ("plain", "secagg+"):
            label = f"{mode}, {poll_name}"
            print(label, flush=True)
            slug = f"{mode.rstrip('+')}-{'insite' if poll is None else 'stock'}"
            results[label] = run_variant(args.work / slug, settings, mode, poll, (8, 4, 48))
    print("\nvariant                          round s  slowest training s  MB/round  final scoring s")
    for label, result in results.items():
        print(
            f"{label:32s} {result['wall']:7.1f}  {result['training']:18.1f}  "
            f"{result['bytes_per_round'] / 1e6:8.1f}  {result['final_exchange']:15.1f}"
        )
    for poll_name in POLLS:
        plain, secure = results[f"plain, {poll_name}"], results[f"secagg+, {poll_name}"]
        print(
            f"{poll_name}: SecAgg+ adds {secure['wall'] - plain['wall']:+.1f} s per round "
            f"({secure['wall'] / plain['wall']:.2f}x) and "
            f"{secure['bytes_per_round'] / plain['bytes_per_round']:.2f}x the bytes"
        )


if __name__ == "__main__":
    main()
