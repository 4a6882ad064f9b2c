"""Round floor: insite against a bare Flower app, 3 sites, a tiny model, one step, in one invocation.

What a round costs when training costs nothing: every variant runs, back to back on the same machine
state, a real loopback federation of three sites over TLS with node authentication, training the
same MONAI UNet (channels 4-8, ~0.1M parameters) for one optimiser step per round:

- **insite**: the demo's machinery (SuperLink behind the Fleet-only proxy, each site's SuperNode
  behind its app-approval gate, egress guard and ledger), with its warm ClientApp worker
  (deploy/site/warm_clientapp.py);
- **insite, cold ClientApps**: the same, with ``INSITE_WARM_CLIENTAPP=0`` (each message in a new
  ``flwr-clientapp`` interpreter, as Flower does);
- **bare Flower**: stock ``flower-supernode`` processes and a stock app (bench/bare_flower_app:
  ``NumPyClient``, ``DefaultWorkflow``, ``FedAvg``, ``SecAggPlusWorkflow``) against a SuperLink
  with the same certificates and node keys that answers every poll at once as Flower's does (no
  held polls, task clean-up at every request), sites connecting directly (no proxy hop).

each with plain aggregation and with SecAgg+. Reported: the median round wall time over rounds 2+
(round 1 also pays for first imports and caches), and each insite variant as a ratio to bare Flower.

    python -m bench.round_floor [--rounds 4] [--work /tmp/insite-round-floor]

With ``--polls``, it measures instead each poll's choice: insite's plain round floor with every
poll at insite's setting, then with one poll at a time put back to Flower's default (SuperNode
idle poll 3 s, SuperExec task poll 1 s, the coordinator's reply poll 3 s as in
``Grid.send_and_receive``), and with all of them faster than insite's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

from bench.round_overhead import FLOOR, environment, federation
from common.settings import RunSettings
from deploy.coordinator.superlink import SuperLink
from deploy.coordinator.superlink_launcher import TASK_CLEANUP_ENV
from deploy.demo.synthetic_sites import DEMO_SITES
from deploy.demo.workspace import Workspace, provision_demo
from deploy.host.flower import flower_tool
from deploy.host.held_polls import ENV as HELD_POLLS_ENV
from deploy.host.processes import LOOPBACK, ProcessSet, free_port
from deploy.site.supernode_launcher import IDLE_POLL_ENV, LOCAL_WAIT_ENV, SUPEREXEC_POLL_ENV, WARM_ENV
from server.exchange import POLL_ENV as COORDINATOR_POLL_ENV

BARE_APP = Path(__file__).parent / "bare_flower_app"
SITES = [profile.name for profile in DEMO_SITES]
# The bare variant's SuperLink answers as Flower's does: every poll at once, task clean-up at every request.
STOCK_SUPERLINK = {HELD_POLLS_ENV: "0", TASK_CLEANUP_ENV: "0"}
ROUND_LIMIT_S = 300.0  # a bare Flower round that takes longer than this has failed, not slowed


def bare_flower(root: Path, rounds: int, secure: bool, floor: RunSettings) -> list[float]:
    """A stock Flower federation of three sites running the bare app; its round wall times."""
    if root.exists():
        shutil.rmtree(root)
    space = Workspace(root)
    provision_demo(space, SITES)
    timings = root / "timings.json"
    with ProcessSet(space.logs, {}) as processes:
        superlink = SuperLink(root, space.consortium, processes, proxy=False)
        superlink.start()
        for name in SITES:
            site = space.site(name, 1)
            superlink.register_key(name, site.public_key)
            processes.start(
                f"supernode-{name}",
                [
                    flower_tool("flower-supernode"),
                    "--superlink",
                    superlink.address,
                    "--root-certificates",
                    str(space.consortium.ca_cert),
                    "--auth-supernode-private-key",
                    str(site.private_key),
                    "--port",
                    str(free_port(LOOPBACK)),
                ],
            )
        run_id = superlink.submit(
            {
                "num-server-rounds": rounds,
                "secure": secure,
                "channels": ",".join(map(str, floor.model.channels)),
                "strides": ",".join(map(str, floor.model.strides)),
                "num-res-units": floor.model.num_res_units,
                "patch": floor.training.patch_size,
                "timings": str(timings),
            },
            BARE_APP,
        )
        limit = ROUND_LIMIT_S * (rounds + 1)
        deadline = time.monotonic() + limit
        while not timings.exists():
            status = superlink.flower_status(run_id)
            if status.startswith("finished") and not timings.exists():  # written just before the run ends
                raise RuntimeError(f"bare Flower run {run_id} ended {status} without its timings; see {space.logs}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"bare Flower run {run_id} still '{status}' after {limit:.0f} s")
            time.sleep(1.0)
    return [float(seconds) for seconds in json.loads(timings.read_text())]


def median_later(walls: list[float]) -> float:
    return statistics.median(walls[1:] or walls)


POLL_CHOICES = {
    "insite's polls (SuperNode 0.5 s idle / 0.05 s for a reply, SuperExec 0.2 s, coordinator 0.1 s)": {},
    "SuperNode idle poll at Flower's 3 s": {IDLE_POLL_ENV: "3.0"},
    "SuperNode idle poll at 0.2 s": {IDLE_POLL_ENV: "0.2"},
    "SuperNode wait for a ready reply at Flower's 0.5 s": {LOCAL_WAIT_ENV: "0.5"},
    "SuperExec task poll at Flower's 1 s": {SUPEREXEC_POLL_ENV: "1.0"},
    "coordinator reply poll at Flower's 3 s": {COORDINATOR_POLL_ENV: "3.0"},
    "all faster (SuperNode idle 0.1 s, SuperExec 0.05 s, coordinator 0.05 s)": {
        IDLE_POLL_ENV: "0.1",
        SUPEREXEC_POLL_ENV: "0.05",
        COORDINATOR_POLL_ENV: "0.05",
    },
}


def measure_polls(work: Path, floor: RunSettings) -> None:
    """insite's warm plain round floor under each poll choice of :data:`POLL_CHOICES`."""
    settings = floor.model_copy(update={"aggregation": floor.aggregation.model_copy(update={"mode": "plain"})})
    walls = {}
    for number, (choice, overrides) in enumerate(POLL_CHOICES.items()):
        print(choice, flush=True)
        with environment({WARM_ENV: "1", **overrides}):
            walls[choice] = [row["wall_s"] for row in federation(work / f"polls-{number}", settings, 2, 1, 32)]
    baseline = median_later(next(iter(walls.values())))
    print("\nplain round wall time, s (median of rounds 2+), by poll choice")
    for choice, rounds in walls.items():
        later = median_later(rounds)
        print(f"  {later:5.1f} s  ({later - baseline:+.1f} s)  {choice}  [{', '.join(f'{w:.1f}' for w in rounds)}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--work", type=Path, default=Path("/tmp/insite-round-floor"))
    parser.add_argument("--polls", action="store_true", help="Measure each poll's choice instead (see above).")
    args = parser.parse_args()
    floor = RunSettings.model_validate({**FLOOR, "rounds": args.rounds, "min_sites": 3})
    if args.polls:
        measure_polls(args.work, floor)
        return
    results: dict[tuple[str, str], list[float]] = {}
    for mode in ("plain", "secagg+"):
        settings = floor.model_copy(update={"aggregation": floor.aggregation.model_copy(update={"mode": mode})})
        for variant, warm in (("insite", "1"), ("insite, cold ClientApps", "0")):
            print(f"{variant}, {mode}", flush=True)
            with environment({WARM_ENV: warm}):
                rows = federation(args.work / f"insite-{warm}-{mode.rstrip('+')}", settings, 2, 1, 32)
            results[variant, mode] = [row["wall_s"] for row in rows]
        print(f"bare Flower, {mode}", flush=True)
        bare = args.work / f"bare-{mode.rstrip('+')}"
        with environment(STOCK_SUPERLINK):
            results["bare Flower", mode] = bare_flower(bare, args.rounds, mode != "plain", floor)
    print(f"\nround wall time, s (median of rounds 2-{args.rounds}; every round in brackets)")
    print(f"{'variant':26s} {'plain':>8s} {'secagg+':>8s}   x bare Flower (plain, secagg+)")
    for variant in ("insite", "insite, cold ClientApps", "bare Flower"):
        plain, secure = (median_later(results[variant, mode]) for mode in ("plain", "secagg+"))
        ratios = (
            median_later(results["bare Flower", mode]) / median_later(results[variant, mode])
            for mode in ("plain", "secagg+")
        )
        print(f"{variant:26s} {plain:8.1f} {secure:8.1f}   " + "  ".join(f"{r:.1f}x faster" for r in ratios))
    for (variant, mode), walls in results.items():
        print(f"  {variant}, {mode}: [{', '.join(f'{w:.1f}' for w in walls)}]")


if __name__ == "__main__":
    main()
