"""insite beside NVIDIA FLARE 2.9's simulator: round wall time for the same UNet, data and site training.

Runs, in one invocation and on the same machine state, the demo configuration's 3D UNet on the
demo's three synthetic sites (48 training and 8 validation volumes of 48^3 each) through:

1. FLARE 2.9's simulator (:mod:`bench.flare.job`): FLARE's standard PyTorch FedAvg recipe, one
   Client API client per site running insite's own data and training code
   (:mod:`bench.flare.site_train`);
2. real insite federations, plain and in insite's default SecAgg+ mode, as
   :mod:`bench.round_overhead` runs them (with FedAvg, below).

Every site does the same work each round on all three: score the incoming global model on its
validation cases (rounds 2+), then ``local_steps`` steps of a fresh Adam on its seeded crops, with
the same torch thread count per site. insite runs FedAvg here, not the demo's FedDyn, whose
regulariser FLARE's FedAvg lacks. Reported per system, over rounds 2+ (round 1 also starts
processes and fills the preprocessing caches): the median round wall time, the median slowest
site's training time (the ``train_steps`` loop, timed at the sites) and the median of their
ratio; for FLARE also its simulator's start-up and shut-down.

What is comparable: the model, data, site work, thread counts and machine. What is not: the
FLARE simulator runs one worker process per client talking to the server process over FLARE's
local cell messaging, with no TLS, no node authentication, no proxy and no approval gate, and
keeps each client's process (model code, data) alive across rounds; insite's numbers are from a
real loopback federation with all of those (SuperLink, three SuperNodes, a new ClientApp process
for every message). A FLARE round is timed at its server, from the controller's ROUND_STARTED to
AFTER_AGGREGATION; an insite round at its coordinator, from the round's start to the aggregated
model: both leave out the checkpoint.

nvflare is never one of insite's dependencies: the FLARE side runs in a virtualenv of its own,
built on first use under ``--work`` (nvflare 2.9.0, and torch, MONAI, NumPy, nibabel and pydantic
pinned to the versions insite's environment has), re-used after.

    python -m bench.flare.compare [--rounds 3] [--steps 40] [--work /tmp/insite-flare-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from bench.round_overhead import federation, report
from common.settings import RunSettings, load_run_settings
from configs import shipped
from deploy.demo.synthetic_sites import DEMO_SITES, write_site
from deploy.demo.workspace import default_threads

REPO = Path(__file__).resolve().parents[2]
NVFLARE = "nvflare==2.9.0"
# What insite's training code needs, at the versions insite's own environment runs.
SHARED = ("torch", "monai", "numpy", "nibabel", "pydantic")
DATA = (48, 8, 48)  # training cases, validation cases, volume edge: the demo configuration's
INSTALL_LIMIT_S = 1800  # building the bench virtualenv (~90 s here)
# The FLARE simulation: its start-up and shut-down (~15 s here), then each round (~10 s here).
SIMULATION_LIMIT_S, ROUND_LIMIT_S = 300, 300


@dataclass(frozen=True)
class Result:
    """One system's run: its round rows (bench.round_overhead's shape) and its whole wall time."""

    name: str
    rows: list[dict]
    run_s: float


def requirements() -> list[str]:
    # A local build tag (torch's "+cpu") is dropped: the public version pins the same release.
    return [NVFLARE, *(f"{name}=={version(name).split('+')[0]}" for name in SHARED)]


def bench_python(venv: Path) -> Path:
    """The bench virtualenv's Python; built when missing or pinned differently from :func:`requirements`."""
    python = venv / "bin" / "python"
    wanted = requirements()
    pins = venv / "bench-requirements.txt"  # written once the install has succeeded
    if pins.exists() and pins.read_text().split() == wanted:
        return python
    shutil.rmtree(venv, ignore_errors=True)
    print(f"building the FLARE bench virtualenv in {venv}: {', '.join(wanted)}", flush=True)
    started = time.monotonic()
    # Without the repository on PYTHONPATH, or pip would take insite for installed there and check its requirements.
    alone = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    subprocess.run([sys.executable, "-m", "venv", str(venv)], env=alone, check=True, timeout=INSTALL_LIMIT_S)
    install = [str(python), "-m", "pip", "install", "--quiet", *wanted]
    subprocess.run(install, env=alone, check=True, timeout=INSTALL_LIMIT_S)
    pins.write_text("\n".join(wanted) + "\n")
    print(f"  built in {time.monotonic() - started:.0f} s", flush=True)
    return python


def flare_rows(events: list[dict]) -> list[dict]:
    """Round rows from the FLARE server's stamps (bench.flare.round_timer); rounds counted from 1."""
    rows: dict[int, dict] = {}
    for event in events:
        if event["event"] == "round_started":
            rows[event["round"]] = {"round": event["round"] + 1, "started": event["t"], "sites": {}}
        elif event["event"] == "contribution":
            rows[event["round"]]["sites"][event["meta"]["site"]] = {
                "train_seconds": event["metrics"]["train-seconds"],
                "work_seconds": event["meta"]["work_seconds"],
            }
        elif event["event"] == "aggregated":
            rows[event["round"]]["wall_s"] = event["t"] - rows[event["round"]]["started"]
    return [rows[number] for number in sorted(rows)]


def flare_lifecycle(events: list[dict]) -> str:
    """The simulator's start-up and shut-down, which its round rows leave out."""
    t = {event["event"]: event["t"] for event in events if event["event"].startswith("simulation")}
    first = min(event["t"] for event in events if event["event"] == "round_started")
    last = max(event["t"] for event in events if event["event"] == "aggregated")
    ready = max(event["meta"]["ready_at"] for event in events if event["event"] == "contribution")
    return (
        f"  simulator start-up: {first - t['simulation_started']:.1f} s to the server's round 1, "
        f"{ready - t['simulation_started']:.1f} s until every client had its process, code and data "
        f"(inside round 1); shut-down after the last aggregation: {t['simulation_finished'] - last:.1f} s"
    )


def flare(work: Path, settings: RunSettings, python: Path) -> tuple[Result, str]:
    """Write the sites' data under ``work`` and run the FLARE job in the bench virtualenv."""
    started = time.monotonic()
    shutil.rmtree(work, ignore_errors=True)
    for profile in DEMO_SITES:
        write_site(profile, work / "sites" / profile.name / "data", *DATA, settings.seed)
    settings_file = work / "settings.json"
    settings_file.write_text(settings.model_dump_json())
    command = [str(python), "-m", "bench.flare.job", "--work", str(work), "--settings", str(settings_file)]
    command += ["--threads", str(default_threads(len(DEMO_SITES)))]  # as the demo's SuperNodes get
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    print(f"  FLARE simulator running (log: {work / 'flare.log'})", flush=True)
    with (work / "flare.log").open("w") as log:
        limit = SIMULATION_LIMIT_S + ROUND_LIMIT_S * settings.rounds
        env = {**os.environ, "PYTHONPATH": path}
        try:
            subprocess.run(command, cwd=REPO, env=env, stdout=log, stderr=log, check=True, timeout=limit)
        except subprocess.TimeoutExpired:
            sys.exit(f"FLARE's simulator did not finish {settings.rounds} rounds in {limit} s: {work / 'flare.log'}")
    run_s = time.monotonic() - started
    events = [json.loads(line) for line in (work / "events.jsonl").read_text().splitlines()]
    return Result("FLARE 2.9 simulator", flare_rows(events), run_s), flare_lifecycle(events)


def insite(work: Path, settings: RunSettings, mode: str) -> Result:
    variant = settings.model_copy(update={"aggregation": settings.aggregation.model_copy(update={"mode": mode})})
    started = time.monotonic()
    rows = federation(work, variant, *DATA)
    return Result(f"insite {'SecAgg+' if mode == 'secagg+' else mode}", rows, time.monotonic() - started)


def slowest(row: dict, key: str = "train_seconds") -> float:
    return max(site[key] for site in row["sites"].values())


def summary(results: list[Result]) -> None:
    print("\nrounds 2+ (medians)")
    print(f"  {'system':20}  {'round s':>7}  {'slowest site training s':>23}  {'round / training':>16}  {'run s':>5}")
    for result in results:
        later = result.rows[1:] or result.rows
        wall = statistics.median(row["wall_s"] for row in later)
        training = statistics.median(slowest(row) for row in later)
        ratio = statistics.median(row["wall_s"] / slowest(row) for row in later)
        print(f"  {result.name:20}  {wall:7.1f}  {training:23.1f}  {ratio:16.2f}  {result.run_s:5.0f}")
    print(
        "  run: the whole run, from writing the sites' data to the end; FLARE's includes its simulator's start-up and "
        "shut-down, insite's its federation's start-up, shut-down and final scoring exchange"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=shipped("federation.toml"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, help="local steps per round (default: the configuration's)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/insite-flare-bench"))
    args = parser.parse_args()
    demo = load_run_settings(args.config)
    training = demo.training.model_copy(update={"local_steps": args.steps or demo.training.local_steps})
    settings = demo.model_copy(
        update={
            "rounds": args.rounds,
            "min_sites": 3,
            "strategy": demo.strategy.model_copy(update={"name": "fedavg"}),
            "training": training,
        }
    )
    python = bench_python(args.work / "venv")
    print(f"FLARE 2.9 simulator, {settings.rounds} rounds x {training.local_steps} steps", flush=True)
    result, lifecycle = flare(args.work / "flare", settings, python)
    results = [result]
    for mode in ("plain", "secagg+"):
        print(f"insite {mode}, {settings.rounds} rounds x {training.local_steps} steps", flush=True)
        results.append(insite(args.work / f"insite-{mode.rstrip('+')}", settings, mode))
    for result in results:
        report(result.name, result.rows)
        if result is results[0]:
            later = result.rows[1:] or result.rows
            work = statistics.median(slowest(row, "work_seconds") for row in later)
            print(f"  median slowest site's whole round (load, score, train), rounds 2+: {work:.1f} s")
            print(lifecycle)
    summary(results)


if __name__ == "__main__":
    main()
