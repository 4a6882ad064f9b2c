"""Is federating worth it? Pooled vs local-only vs federated training on the demo's three sites.

Every regime trains the same UNet with the same loss, batch and patch size, starting learning rate
and schedule, at equal compute: ``rounds x local_steps x sites`` optimiser steps in all (the demo
recipe, ``configs/federation.toml``: 13 x 40 x 3 = 1,560). Regimes:

- ``pooled``: one model, one Adam, batches drawn in turn from the three sites' training cases
  (the learning rate follows the run's schedule, round by round, as the sites' does);
- ``local``: each site's local-only model (:func:`client.local_only.train_local_only`: the run's
  rounds x local steps on its own cases), scored on every site's held-out cases (a 3x3 matrix);
- ``fedavg``, ``fedprox``, ``fedadam``, ``fedyogi``, ``fedavgm``, ``feddyn``: the project's real
  ServerApp and ClientApp over the in-process Grid (:mod:`deploy.in_process`), plain aggregation
  (SecAgg+ computes the same weighted sum; its exactness is the secure-aggregation tests'
  business). After training, each site also adapts the consensus model to its own cases
  (:mod:`client.personalise`, ``training.personalise_steps`` more steps: not counted in the equal
  compute) and scores it on its own held-out cases.

Each (regime, seed) runs in its own spawned process with one torch thread, ``--workers`` at a
time, so the machine's cores are used and no job's timing or threads disturb another's. The
sites' data are the demo's (``deploy.demo.synthetic_sites``: same profiles, case counts, volume
size and data seed; written as NIfTI directly rather than through DICOM and ingest). A seed
changes the training (initial weights, crops), never the data.

    python -m bench.fl_vs_pooled [--seeds 0 1 2] [--regimes pooled local fedavg ...] [--workers 2]
                                 [--out .bench/fl_vs_pooled]

Writes ``results.json`` (every job's per-site Dice), ``fl_vs_pooled.png`` and prints the table:
mean +- spread (half the range) over seeds of the Dice on the mixed held-out set (every site's
held-out cases together) and per site, and each regime's ratio to pooled.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import torch

from client.local_only import model_path, train_local_only
from client.local_round import SiteRound
from client.personalise import personalise
from client.site import SiteContext
from client.training import endless, make_optimizer, train_steps
from common.model import build_model
from common.run_record import RunRecord, latest_checkpoint, load_checkpoint
from common.settings import RunSettings, StrategyName, load_run_settings
from deploy.demo.synthetic_sites import DEMO_SITES, write_site
from deploy.in_process.federation import run_in_process, site_grid

FEDERATED: tuple[str, ...] = get_args(StrategyName)
REGIMES = ("pooled", "local", *FEDERATED)
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "federation.toml"


@dataclass(frozen=True)
class Job:
    """One regime trained with one seed, in a folder of its own (site caches included)."""

    regime: str
    seed: int
    settings: RunSettings
    sites: dict[str, Path]
    folder: Path


def write_sites(folder: Path, train: int, val: int, size: int, data_seed: int) -> dict[str, Path]:
    """The demo's three sites' training-ready cases (written once, shared read-only by every job)."""
    sites = {}
    for profile in DEMO_SITES:
        data = folder / profile.name
        if not (data / "cases.json").exists():
            write_site(profile, data, train, val, size=size, seed=data_seed)
        sites[profile.name] = data
    return sites


def site_context(job: Job, site: str) -> SiteContext:
    return SiteContext(site, job.sites[site], job.folder / "site-caches" / site, "cpu", 1)


def score(job: Job, weights: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """Mean Dice and case count of ``weights`` on each site's held-out cases."""
    scores = {}
    for site in job.sites:
        result = SiteRound.prepare(site_context(job, site), job.settings).evaluate(weights)
        scores[site] = {"dice": result["dice"], "cases": result["num-examples"]}
    return scores


def score_personalised_at(job: Job, site: str, consensus: dict[str, torch.Tensor]) -> float:
    """The site's adaptation of the consensus model (client.personalise), scored on its own held-out cases."""
    site_round = SiteRound.prepare(site_context(job, site), job.settings)
    return site_round.evaluate(personalise(site_round, consensus))["dice"]


def run_job(job: Job) -> dict[str, Any]:
    """The job's result, from its folder if an earlier invocation finished it; a failure is a result too.

    A benchmark of an hour must not lose finished jobs to one that fails (a strategy whose run
    pauses, say), nor to an interruption: each job keeps its result, and its trained models, in
    its own folder, and a later invocation with the same ``--out`` reuses them.
    """
    done = job.folder / "result.json"
    if done.exists():
        return dict(json.loads(done.read_text()))
    torch.set_num_threads(1)
    try:
        result = train_and_score(job)
    except Exception as error:  # any failure of one regime is reported beside the others' results
        return {"regime": job.regime, "seed": job.seed, "failed": f"{type(error).__name__}: {error}"}
    done.write_text(json.dumps(result))
    return result


def train_and_score(job: Job) -> dict[str, Any]:
    """Train the job's regime; its scores (per site, and for ``local`` per model and site) and time."""
    started = time.monotonic()
    result: dict[str, Any] = {"regime": job.regime, "seed": job.seed}
    if job.regime == "pooled":
        result["scores"] = score(job, train_pooled(job))
    elif job.regime == "local":
        result["matrix"] = {site: score(job, train_local(job, site)) for site in job.sites}
    else:
        consensus = train_federated(job)
        result["scores"] = score(job, consensus)
        result["personalised"] = {site: score_personalised_at(job, site, consensus) for site in job.sites}
    result["seconds"] = time.monotonic() - started
    return result


def train_pooled(job: Job) -> dict[str, torch.Tensor]:
    """All sites' training cases as one data set: the upper bound federated training is measured against."""
    kept = job.folder / "pooled.pt"
    if kept.exists():
        return dict(torch.load(kept, weights_only=True))
    settings = job.settings
    torch.manual_seed(settings.seed)
    model = build_model(settings.model)
    rounds = [SiteRound.prepare(site_context(job, site), settings) for site in job.sites]
    compute = rounds[0].compute
    optimizer = make_optimizer(model, settings.training.learning_rate)
    steps = settings.training.local_steps * len(rounds)
    for round_number in range(1, settings.rounds + 1):
        for group in optimizer.param_groups:
            group["lr"] = settings.training.learning_rate_at(round_number, settings.rounds)
        batches = [
            endless(site.data.train_loader(settings.training.batch_size, settings.training.patch_size, seed))
            for site in rounds
            for seed in [site.site.seed(settings.seed, round_number)]
        ]
        train_steps(model, _in_turn(batches), steps, optimizer, compute)
    weights = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    torch.save(weights, kept)
    return weights


def _in_turn(sites: list[Iterator[dict]]) -> Iterator[dict]:
    """One batch from each site in turn, each site's batches drawn as its own round draws them."""
    while True:
        for batches in sites:
            yield next(batches)


def train_local(job: Job, site: str) -> dict[str, torch.Tensor]:
    context = site_context(job, site)
    if not model_path(context).exists():  # kept from an interrupted invocation otherwise
        train_local_only(context, job.settings)
    return torch.load(model_path(context), weights_only=True)["weights"]


def train_federated(job: Job) -> dict[str, torch.Tensor]:
    """The project's ServerApp and ClientApp, in this process, over the stub Grid; the last round's model."""
    settings = job.settings
    run_dir = job.folder / "run"
    record = RunRecord(run_dir)
    if not (run_dir / "run.json").exists() or record.read()["status"] != "completed":
        shutil.rmtree(run_dir, ignore_errors=True)  # an interrupted run starts again: its site state went with it
        shutil.rmtree(job.folder / "site-caches", ignore_errors=True)
        run_in_process(run_dir, settings, site_grid(run_dir, settings, job.sites))
    if record.read()["status"] != "completed":
        raise RuntimeError(f"the run ended {record.read()['status']}: {record.read().get('failure')}")
    checkpoint = latest_checkpoint(run_dir)
    assert checkpoint is not None  # a completed run has checkpointed every round
    return load_checkpoint(checkpoint).weights


def mixed(scores: dict[str, dict[str, float]]) -> float:
    """Dice over every site's held-out cases together (a case-weighted mean of the sites' means)."""
    cases = sum(site["cases"] for site in scores.values())
    return sum(site["dice"] * site["cases"] for site in scores.values()) / cases


def rows(results: list[dict[str, Any]], sites: list[str]) -> list[dict[str, Any]]:
    """One row per regime (local: one per site's model), each a list of per-seed figures."""
    table: dict[str, dict[str, list[float]]] = {}
    for result in results:
        models = (
            {f"local-only {site}": scores for site, scores in result["matrix"].items()}
            if "matrix" in result
            else {result["regime"]: result["scores"]}
        )
        for name, scores in models.items():
            row = table.setdefault(name, {"mixed": [], **{site: [] for site in sites}})
            row["mixed"].append(mixed(scores))
            for site in sites:
                row[site].append(scores[site]["dice"])
    return [{"name": name, **figures} for name, figures in table.items()]


def spread(values: list[float]) -> str:
    half_range = (max(values) - min(values)) / 2 if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} +- {half_range:.3f}"


def print_table(table: list[dict[str, Any]], sites: list[str]) -> None:
    pooled = next((row for row in table if row["name"] == "pooled"), None)
    print("\nDice on held-out cases, mean +- half range over the seeds each regime finished")
    print(f"{'regime':<20} {'seeds':>5} {'mixed':>16} {'x pooled':>9} " + " ".join(f"{site:>16}" for site in sites))
    for row in table:
        ratio = statistics.mean(row["mixed"]) / statistics.mean(pooled["mixed"]) if pooled else float("nan")
        print(
            f"{row['name']:<20} {len(row['mixed']):>5} {spread(row['mixed']):>16} {ratio:>9.3f} "
            + " ".join(f"{spread(row[site]):>16}" for site in sites)
        )


def print_per_site(results: list[dict[str, Any]], sites: list[str]) -> None:
    """Each site's own held-out cases: its local-only model, each consensus model and the site's adaptation of it."""
    print("\nEach site on its own held-out cases (mean over seeds): local-only | consensus -> adapted at the site")
    local = [r for r in results if "matrix" in r]
    if local:
        own = {site: statistics.mean(r["matrix"][site][site]["dice"] for r in local) for site in sites}
        print(f"{'local-only':<20} " + " ".join(f"{own[site]:>16.3f}" for site in sites))
    for regime in dict.fromkeys(r["regime"] for r in results if "personalised" in r):
        runs = [r for r in results if r["regime"] == regime]
        cells = []
        for site in sites:
            consensus = statistics.mean(r["scores"][site]["dice"] for r in runs)
            adapted = statistics.mean(r["personalised"][site] for r in runs)
            cells.append(f"{consensus:.3f} -> {adapted:.3f}")
        print(f"{regime:<20} " + " ".join(f"{cell:>16}" for cell in cells))


def plot(table: list[dict[str, Any]], sites: list[str], path: Path) -> None:
    from matplotlib.figure import Figure  # noqa: PLC0415  (only the plot needs it)

    figure = Figure(figsize=(10, 5), layout="constrained")
    axes = figure.subplots()
    columns = ["mixed", *sites]
    width = 0.8 / len(table)
    for index, row in enumerate(table):
        means = [statistics.mean(row[column]) for column in columns]
        errors = [(max(row[column]) - min(row[column])) / 2 for column in columns]
        positions = [column + index * width for column in range(len(columns))]
        axes.bar(positions, means, width, yerr=errors, label=row["name"], capsize=2)
    axes.set_xticks([column + 0.4 - width / 2 for column in range(len(columns))], ["mixed held-out", *sites])
    axes.set_ylabel("Dice")
    axes.set_ylim(0, 1)
    axes.legend(fontsize="small", ncols=5, loc="upper center", bbox_to_anchor=(0.5, -0.08))
    figure.savefig(path, dpi=120)


def job_settings(settings: RunSettings, regime: str, seed: int) -> RunSettings:
    """What one job trains with: its seed and, when federated, its strategy over plain aggregation.

    Pooled and local-only training use no strategy, so theirs is fixed: the config's choice of
    strategy (the demo's) then changes neither their settings nor their folder, and no switch of
    the demo's strategy retrains them.
    """
    return settings.model_copy(
        update={
            "seed": seed,
            "strategy": settings.strategy.model_copy(update={"name": regime if regime in FEDERATED else "fedavg"}),
            "aggregation": settings.aggregation.model_copy(update={"mode": "plain"}),
        }
    )


def with_overrides(settings: RunSettings, overrides: list[str]) -> RunSettings:
    """``settings`` with dotted ``KEY=VALUE`` overrides, validated again as a whole."""
    data = settings.model_dump(mode="json")
    for override in overrides:
        key, _, value = override.partition("=")
        *parents, leaf = key.split(".")
        table = data
        for parent in parents:
            table = table[parent]
        if leaf not in table:
            raise SystemExit(f"--set {override}: no run setting {key}")
        try:
            table[leaf] = json.loads(value)
        except ValueError:  # a bare word: a string setting
            table[leaf] = value
    return RunSettings.model_validate(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--regimes", nargs="+", choices=REGIMES, default=list(REGIMES))
    parser.add_argument("--workers", type=int, default=2, help="jobs at a time, one core each")
    parser.add_argument("--train-cases", type=int, default=48, help="per site (the demo's)")
    parser.add_argument("--val-cases", type=int, default=16, help="per site (the demo's)")
    parser.add_argument("--size", type=int, default=48, help="volume edge, voxels (the demo's)")
    parser.add_argument("--rounds", type=int, help="override the config's rounds (a quick look)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a run setting for every regime, e.g. training.learning_rate=0.002 (value as JSON)",
    )
    parser.add_argument("--out", type=Path, default=Path(".bench/fl_vs_pooled"))
    args = parser.parse_args()

    overrides = args.set + ([f"rounds={args.rounds}"] if args.rounds else [])
    settings = with_overrides(load_run_settings(args.config), overrides)
    sites = write_sites(args.out / "sites", args.train_cases, args.val_cases, args.size, data_seed=0)
    jobs = []
    for seed in args.seeds:
        for regime in args.regimes:
            trained_with = job_settings(settings, regime, seed)
            # other settings, another folder: nothing stale is reused
            folder = args.out / "jobs" / f"{regime}-seed{seed}-{trained_with.digest()[:12]}"
            jobs.append(Job(regime, seed, trained_with, sites, folder))
    steps = settings.rounds * settings.training.local_steps * len(sites)
    print(f"{len(jobs)} jobs, {args.workers} at a time; {steps} optimiser steps each (all sites together)")
    results: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.workers, mp_context=context) as pool:
        futures = {pool.submit(run_job, job): job for job in jobs}
        for future in as_completed(futures):
            result = future.result()
            if "failed" in result:
                print(f"  {result['regime']} seed {result['seed']}: FAILED, {result['failed']}", flush=True)
                failed.append(result)
                continue
            results.append(result)
            print(f"  {result['regime']} seed {result['seed']}: {result['seconds']:.0f} s", flush=True)
    results.sort(key=lambda result: (REGIMES.index(result["regime"]), result["seed"]))
    names = list(sites)
    table = rows(results, names)
    args.out.mkdir(parents=True, exist_ok=True)
    settings_json = json.loads(settings.canonical_json())
    (args.out / "results.json").write_text(
        json.dumps({"settings": settings_json, "jobs": results, "failed": failed}, indent=1)
    )
    print_table(table, names)
    print_per_site(results, names)
    plot(table, names, args.out / "fl_vs_pooled.png")
    print(f"\nresults.json and fl_vs_pooled.png in {args.out}")
    for result in failed:
        print(f"not in the table: {result['regime']} seed {result['seed']} failed: {result['failed']}")


if __name__ == "__main__":
    main()
