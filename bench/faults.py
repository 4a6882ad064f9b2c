"""What faults cost a real federation: a site crash every three rounds and a coordinator crash.

The README's "When things go wrong" promises that each fault costs at most the round it happens
in and nobody types ``resume``. This measures it. One invocation runs, back to back on the same
three synthetic sites (the demo's non-IID scanners) and the same settings, two real loopback
federations (SuperLink behind the Fleet-only proxy, TLS, node authentication, SecAgg+):

1. fault-free: ``--rounds`` rounds (default 10);
2. with faults made by ``deploy.demo.chaos`` (as ``tests/federation/test_fault_federation.py`` does):
   a SIGKILL of a random site's SuperNode at a random SecAgg+ stage in rounds 2, 5, 8, ... (one per
   three rounds; the demo's process supervisor restarts it), and a SIGKILL of the ServerApp in
   round ``--coordinator-round`` (default 6) at the masked-update stage (the run supervisor continues
   the run from the last checkpoint). The draws come from ``random.Random(--seed)``.

Reported, as a table and as JSON (``--json``, default WORKSPACE/faults.json): rounds completed per
run; per fault, what was struck and when, the seconds from the strike to the next closed round
(rows' ``closed_at``; a round's row closes once the next round's replies have scored its model),
the close-to-close interval around it, the fault-free run's median round time (median interval
between closed rows) and the detection delay: for a site, the sooner of ``faults.straggler_grace_s``
and the SuperNode heartbeat (two missed 10 s beats, deploy/site/supernode_launcher.py); for the
ServerApp, the run supervisor's stale-state limit. Then the final global Dice of both runs and their
difference. Targets, printed beside the figures and not asserted: every round completes; no fault
costs more than one round plus its detection delay; the final Dice is within 0.02 of the fault-free
run's.

Defaults: 48^3 volumes, 8 cases per site (6 train, 2 held out), the shipped configs/federation.toml
(fault settings included: straggler grace 60 s, quorum 2 of 3) with a smaller UNet (channels
8-16-32, one residual unit), 32^3 patches and 15 local steps: enough for a Dice near 0.5 after
three rounds, so the Dice comparison means something. Most of a round here is the framework's
per-exchange floor (bench/round_floor.py), not training, so smaller data or models would not make
it much shorter; a fault's cost is mostly its detection delay. Timings are wall-clock on whatever
else the machine runs: compare the two runs of one invocation, not machines.

    python -m bench.faults [--rounds 10] [--size 48] [--cases 8] [--steps 15] [--seed 0]
                           [--coordinator-round 6] [--workspace .bench/faults] [--json FILE]
                           [--report-only]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from common.errors import InsiteError
from common.run_record import RunRecord
from common.settings import RunSettings, load_run_settings
from configs import shipped
from deploy.coordinator.run_supervisor import STALE_S
from deploy.demo.chaos import SECURE_STAGES, Chaos, Fault
from deploy.demo.synthetic_sites import DEMO_SITES, write_site
from deploy.demo.workspace import Workspace, provision_demo, run_demo_federation
from deploy.host.processes import ProcessSet
from deploy.site.supernode_launcher import DEFAULT_HEARTBEAT_S

SITES = [profile.name for profile in DEMO_SITES]
MODEL = {"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1}
HEARTBEAT_DETECTION_S = 2 * DEFAULT_HEARTBEAT_S  # the SuperLink takes a node for gone after two missed beats
DICE_TOLERANCE = 0.02


def plan(rounds: int, coordinator_round: int, rng: random.Random) -> list[Fault]:
    """A site crash in rounds 2, 5, 8, ... and the ServerApp killed once, in the order they come."""
    faults = [Fault(r, rng.choice(SECURE_STAGES), f"supernode-{rng.choice(SITES)}") for r in range(2, rounds, 3)]
    faults.append(Fault(coordinator_round, "masked-update", "serverapp"))
    return sorted(faults, key=lambda fault: (fault.round, SECURE_STAGES.index(fault.stage)))


def federation(root: Path, settings: RunSettings, args: argparse.Namespace, faults: list[Fault]) -> dict[str, Any]:
    """A fresh three-site federation under ``root``, with ``faults`` made while it runs."""
    if root.exists():
        shutil.rmtree(root)
    space = Workspace(root)
    held_out = max(1, args.cases // 4)
    for profile in DEMO_SITES:
        write_site(
            profile, space.site_dir(profile.name) / "data", args.cases - held_out, held_out, args.size, args.seed
        )
    provision_demo(space, SITES)
    RunRecord(space.run_dir).create("bench-faults", settings, transport={"tls": True, "node_auth": True})
    started = time.time()

    def event(text: str) -> None:
        print(f"  {time.time() - started:7.1f} s  {text}", flush=True)

    chaos: list[Chaos] = []

    def make_chaos(processes: ProcessSet) -> Chaos:
        chaos.append(Chaos(processes, RunRecord(space.run_dir), faults, event))
        return chaos[-1]

    def on_round(row: dict) -> None:
        dropped = ", ".join(f"{site} dropped at {stage}" for site, stage in row.get("dropped", {}).items())
        event(f"round {row['round']} closed: Dice {row['global_dice']:.3f}, {len(row['sites'])} sites {dropped}")

    load = os.getloadavg()[0]
    error = ""
    try:
        record = run_demo_federation(space, settings, event, on_round, chaos=make_chaos if faults else None)
    except InsiteError as failure:  # a run that does not complete is a finding, not a crash of the benchmark
        error, record = str(failure), RunRecord(space.run_dir).read()
        event(f"run did not complete: {error}")
    return {
        "workspace": str(root),
        "status": record.get("status"),
        "error": error,
        "started": started,
        "wall_s": time.time() - started,
        "load_1min": [load, os.getloadavg()[0]],
        "rows": RunRecord(space.run_dir).rounds(),
        "restarts": record.get("coordinator_restarts", []),
        "struck": [[at, fault.round, fault.stage, fault.target] for at, fault in chaos[0].done] if chaos else [],
    }


def median_round_s(rows: list[dict]) -> float:
    """The median interval between consecutive closed rows (one round, all included; not the final scoring)."""
    closes = [row["closed_at"] for row in rows[:-1]]  # the last row closes after a scoring exchange only
    return statistics.median(b - a for a, b in zip(closes, closes[1:], strict=False)) if len(closes) > 1 else 0.0


def recorded(run: dict, fault: Fault) -> str:
    """What the run itself recorded of ``fault``: the dropped site and its return, or the restart."""
    if fault.target == "serverapp":
        return "; ".join(f"restart {n} ({r['reason']})" for n, r in enumerate(run["restarts"], 1)) or "no restart"
    site = fault.target.removeprefix("supernode-")
    row: dict = next((row for row in run["rows"] if row["round"] == fault.round), {})
    back = [
        row["round"] for row in run["rows"] if row["round"] > fault.round and "num_train" in row["sites"].get(site, {})
    ]
    return f"dropped {row.get('dropped') or 'nothing'}; " + (
        f"trained again in round {back[0]}" if back else "never back"
    )


def fault_costs(run: dict, faults: list[Fault], round_s: float, grace_s: float) -> list[dict]:
    """Per planned fault: when it struck, what the run recorded, and what it cost in wall time."""
    closes = [row["closed_at"] for row in run["rows"]]
    costs = []
    for fault in faults:
        struck = next((at for at, *done in run["struck"] if done == [fault.round, fault.stage, fault.target]), None)
        detection = STALE_S if fault.target == "serverapp" else min(grace_s, HEARTBEAT_DETECTION_S)
        cost = interval = None
        if struck is not None:
            before = max((close for close in closes if close <= struck), default=run["started"])
            after = min((close for close in closes if close > struck), default=None)
            if after is not None:
                cost, interval = after - struck, after - before
        costs.append(
            {
                "target": fault.target,
                "round": fault.round,
                "stage": fault.stage,
                "struck_at": struck,
                "struck_after_s": None if struck is None else struck - run["started"],
                "recorded": recorded(run, fault),
                "seconds_to_next_close": cost,
                "close_interval_s": interval,
                "detection_delay_s": detection,
                "bound_s": round_s + detection,
                "within_bound": cost is not None and cost <= round_s + detection,
            }
        )
    return costs


def summarize(args: argparse.Namespace, settings: RunSettings, faults: list[Fault], runs: dict[str, dict]) -> dict:
    """The figures of both runs, as printed and as written to ``--json``."""
    round_s = median_round_s(runs["fault-free"]["rows"])
    dice = {name: run["rows"][-1]["global_dice"] if run["rows"] else None for name, run in runs.items()}
    difference = None if None in dice.values() else dice["faults"] - dice["fault-free"]  # type: ignore[operator]
    costs = fault_costs(runs["faults"], faults, round_s, settings.faults.straggler_grace_s)
    completed = {name: len(run["rows"]) for name, run in runs.items()}
    return {
        "arguments": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
        "run_settings": settings.model_dump(mode="json"),
        "runs": {
            name: run | {"rounds_completed": completed[name], "final_dice": dice[name]} for name, run in runs.items()
        },
        "median_round_s": round_s,
        "detection_delay_s": {
            "straggler_grace": settings.faults.straggler_grace_s,
            "heartbeat": HEARTBEAT_DETECTION_S,
            "run_supervisor": STALE_S,
        },
        "faults": costs,
        "dice_difference": difference,
        "targets": {
            "every round completes": all(n == settings.rounds for n in completed.values()),
            "no fault costs more than one round plus its detection delay": all(c["within_bound"] for c in costs),
            f"final Dice within {DICE_TOLERANCE} of the fault-free run": difference is not None
            and abs(difference) <= DICE_TOLERANCE,
        },
    }


def print_report(report: dict) -> None:
    rounds = report["run_settings"]["rounds"]
    print("\nrun         status     rounds  final Dice  wall s  load (1 min) before/after")
    for name, run in report["runs"].items():
        final = "-" if run["final_dice"] is None else f"{run['final_dice']:.3f}"
        load = "/".join(f"{x:.1f}" for x in run["load_1min"])
        print(
            f"{name:11s} {run['status'] or '-':10s} {run['rounds_completed']:3d}/{rounds:<3d} {final:>10s}  "
            f"{run['wall_s']:6.0f}  {load}"
        )
    delays = report["detection_delay_s"]
    print(
        f"\nfault-free median round time {report['median_round_s']:.1f} s; detection delay: a site, the sooner of "
        f"straggler grace {delays['straggler_grace']:.0f} s and heartbeat 2 x {DEFAULT_HEARTBEAT_S:.0f} s = "
        f"{delays['heartbeat']:.0f} s; the ServerApp, run supervisor {delays['run_supervisor']:.0f} s"
    )
    print("fault                          struck at  to next close s  close-to-close s  bound s  within  recorded")
    for cost in report["faults"]:
        what = f"r{cost['round']} {cost['stage']} {cost['target']}"
        at = "not struck" if cost["struck_after_s"] is None else f"{cost['struck_after_s']:.0f} s"
        to_close = "-" if cost["seconds_to_next_close"] is None else f"{cost['seconds_to_next_close']:.1f}"
        interval = "-" if cost["close_interval_s"] is None else f"{cost['close_interval_s']:.1f}"
        print(
            f"{what:30s} {at:>10s}  {to_close:>15s}  {interval:>16s}  {cost['bound_s']:7.1f}  "
            f"{'yes' if cost['within_bound'] else 'NO':6s}  {cost['recorded']}"
        )
    difference = report["dice_difference"]
    print(f"\nfinal Dice difference (faults - fault-free): {'-' if difference is None else f'{difference:+.3f}'}")
    for target, met in report["targets"].items():
        print(f"target: {target}: {'met' if met else 'NOT met'}")
    print("timings are wall-clock on a shared machine: other work running at the same time makes them noisy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--size", type=int, default=48, help="edge of each synthetic volume, voxels")
    parser.add_argument("--cases", type=int, default=8, help="cases per site; a quarter of them held out")
    parser.add_argument("--steps", type=int, default=15, help="local training steps per round")
    parser.add_argument("--seed", type=int, default=0, help="seeds the fault draws, the data and the run")
    parser.add_argument("--coordinator-round", type=int, default=6, help="round in which the ServerApp is killed")
    parser.add_argument("--workspace", type=Path, default=Path(".bench/faults"))
    parser.add_argument("--json", type=Path, help="where to write the figures (default: WORKSPACE/faults.json)")
    parser.add_argument(
        "--report-only", action="store_true", help="report again from WORKSPACE/runs.json, the last invocation's runs"
    )
    args = parser.parse_args()
    args.workspace = args.workspace.resolve()  # nginx resolves a relative config path against its own prefix
    base = load_run_settings(shipped("federation.toml"))
    settings = base.model_copy(
        update={
            "rounds": args.rounds,
            "seed": args.seed,
            "model": base.model.model_validate(MODEL),
            "training": base.training.model_copy(update={"local_steps": args.steps, "patch_size": 32}),
        }
    )
    faults = plan(args.rounds, min(args.coordinator_round, args.rounds - 1), random.Random(args.seed))
    print(f"{args.rounds} rounds, 3 sites x {args.cases} cases of {args.size}^3, {args.steps} steps, seed {args.seed}")
    print("faults: " + "; ".join(f"round {f.round} {f.stage}: kill {f.target}" for f in faults), flush=True)
    saved = args.workspace / "runs.json"  # the raw runs, kept so a report can be made again without rerunning
    if args.report_only:
        runs = json.loads(saved.read_text())
    else:
        runs = {}
        for name, planned in (("fault-free", []), ("faults", faults)):
            print(name, flush=True)
            runs[name] = federation(args.workspace / name, settings, args, planned)
            saved.write_text(json.dumps(runs, indent=1) + "\n")
    report = summarize(args, settings, faults, runs)
    print_report(report)
    path = args.json or args.workspace / "faults.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"figures written to {path}")


if __name__ == "__main__":
    main()
