"""``insite demo``: a whole federation on this machine with synthetic hospital sites."""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from client.ledger import Ledger
from common.run_record import RunRecord, latest_checkpoint, resume_point
from common.settings import RunSettings, load_run_settings
from configs import shipped
from deploy.coordinator.dashboard.server import DashboardServer, available_port, binding_for
from deploy.demo.chaos import Chaos, plan_faults
from deploy.demo.evaluation import compare_with_local_only, train_local_only_models
from deploy.demo.publish import demo_publish
from deploy.demo.site_data import PASSPHRASE_FILE, ProgressEvent, prepare_sites
from deploy.demo.synthetic_sites import DEMO_SITES
from deploy.demo.workspace import Workspace, provision_demo, run_demo_federation
from deploy.host.processes import LOOPBACK, ProcessSet
from insite.cli.evaluation_report import plot_evaluation, print_evaluation
from insite.cli.run_report import report_run, round_printer
from insite.cli.terminal import console, run_paused

DEFAULT_CONFIG = shipped("federation.toml")


def _prepare_sites(workspace: Workspace, train: int, val: int, size: int, seed: int) -> None:
    """Each site turns its raw DICOM export into training cases, as ``insite site`` commands would."""
    folders = {profile: workspace.site_dir(profile.name) for profile in DEMO_SITES}
    with Progress(
        TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        tasks = {p.name: progress.add_task(f"{p.name}: starting", total=None) for p in DEMO_SITES}

        def show(event: ProgressEvent) -> None:
            site, stage, total = event
            if stage is None:
                progress.advance(tasks[site])
            else:
                progress.reset(tasks[site], total=total, description=f"{site}: {stage}")

        results = prepare_sites(folders, train + val, val / (train + val), size, seed, show)
    for result in results:
        console.print(result.summary(), highlight=False)
    site = folders[DEMO_SITES[0]]
    console.print(
        f"check it yourself: insite site scan {site / 'deid'} --original {site / 'pacs-export'} "
        f"--config {site / 'deid.toml'} --passphrase-file {site / PASSPHRASE_FILE}",
        highlight=False,
        soft_wrap=True,
    )


def demo(
    workspace: Path = typer.Option(Path("insite-demo"), help="Folder for sites, keys, logs and the run."),
    config: Path = typer.Option(DEFAULT_CONFIG, help="Run settings (TOML, \\[run] table)."),
    rounds: int = typer.Option(None, help="Override the number of rounds in the config."),
    train_cases: int = typer.Option(
        48,
        min=1,
        help="Training volumes per site (with 16 the model overfits: Dice stalls near 0.68 instead of passing 0.7).",
    ),
    val_cases: int = typer.Option(
        16,
        min=0,
        help="Held-out volumes per site (Dice is reported on these; with 8 the figure swings by +-0.04 with the draw).",
    ),
    size: int = typer.Option(48, help="Edge of each synthetic volume, voxels."),
    fresh: bool = typer.Option(True, help="Delete an existing demo workspace first."),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue the workspace's interrupted run from its last checkpoint (same sites, keys and settings).",
    ),
    chaos: bool = typer.Option(
        False,
        "--chaos",
        help="Make faults during the run: kill a random site's SuperNode at a random secure-aggregation "
        "stage, later kill the coordinator's ServerApp. The federation rides through them; the round "
        "lines show what each cost.",
    ),
    chaos_seed: int = typer.Option(None, "--chaos-seed", help="Fix the draw of --chaos (default: random)."),
    compare: bool = typer.Option(
        True,
        "--compare/--no-compare",
        help="After the run, each site trains its local-only model at home (same rounds x local steps, the "
        "sites side by side) and a federated evaluation compares it with the consensus model; only the "
        "scores leave the sites. --no-compare skips it (about 5 minutes on a 2-core machine).",
    ),
) -> None:
    """Run a three-site federation on this machine with synthetic data.

    Three synthetic hospitals with different scanners and lesion sizes each start from a raw DICOM
    export full of (made-up) patient identifiers, de-identify it, ingest it into training cases and
    run a real Flower SuperNode; a SuperLink coordinates them over TLS with node authentication, all on loopback.
    A MONAI 3D UNet is trained federatedly; the run folder gets a checkpoint per round,
    metrics.json and dice.png. The consensus model is then compared with each site's local-only
    model on every site's held-out cases (evaluation/evaluation.png; --no-compare skips it) and published.
    """
    faults = _chaos(chaos_seed) if chaos else None
    if resume:
        _resume(Workspace(workspace.resolve()), faults, compare)
        return
    settings = load_run_settings(config)
    if rounds is not None:
        settings = settings.model_copy(update={"rounds": rounds})
    space = Workspace(workspace.resolve())
    if fresh and space.root.exists():
        shutil.rmtree(space.root)
    started = time.monotonic()
    _prepare_sites(space, train_cases, val_cases, size, settings.seed)
    provision_demo(space, [p.name for p in DEMO_SITES])
    console.print(
        f"consortium provisioned in {space.consortium.root} (CA, SuperLink certificate, {len(DEMO_SITES)} site keys)"
    )
    RunRecord(space.run_dir).create(
        "demo",
        settings,
        transport={
            "tls": True,
            "node_auth": True,
            "secure_aggregation": settings.aggregation.mode == "secagg+",
            "dp_epsilon": None,
        },
    )
    with _dashboard(space):
        _finish(space, _run_resumably(space, lambda: run_and_report(space, settings, started, faults)), compare)


def _dashboard(space: Workspace) -> DashboardServer:
    """The coordinator's dashboard over the demo, on loopback, for as long as the demo runs."""
    source = space.dashboard
    board = DashboardServer(source, binding_for(source, LOOPBACK, available_port(LOOPBACK)))
    console.print(f"[bold]dashboard[/]: {board.binding.url} (live while the demo runs)", highlight=False)
    return board


def _chaos(seed: int | None) -> Callable[[Workspace, RunSettings], Callable[[ProcessSet], Chaos]]:
    """The chaos of one demo run: faults drawn for its rounds and sites, made while it runs."""
    rng = random.Random(seed)

    def for_run(space: Workspace, settings: RunSettings) -> Callable[[ProcessSet], Chaos]:
        faults = plan_faults(settings.rounds, space.site_names(), rng)
        record = RunRecord(space.run_dir)
        return lambda processes: Chaos(processes, record, faults, _event)

    return for_run


def _event(text: str) -> None:
    console.print(f"[dim]{escape(text)}[/]", highlight=False)


def run_and_report(
    space: Workspace,
    settings: RunSettings,
    started: float,
    faults: Callable[[Workspace, RunSettings], Callable[[ProcessSet], Chaos]] | None = None,
    port: int | None = None,
) -> dict:
    """Run the rounds with a line per round; then the table, ``dice.png`` and ``summary.json``."""
    record = run_demo_federation(
        space,
        settings,
        on_event=_event,
        on_round=round_printer(settings),
        port=port,
        chaos=faults(space, settings) if faults else None,
    )
    report_run(space.run_dir, settings, record, started)
    return record


def _finish(space: Workspace, record: dict, compare: bool) -> None:
    """The comparison with local-only models, ledgers and publication; a paused run says how to continue it instead."""
    if record.get("status") == "paused":
        raise run_paused(record, f"insite demo --resume --workspace {space.root}")
    if compare:
        _compare(space, RunRecord(space.run_dir).settings())
    _report_ledgers(space, record["sites"])
    _publish(space, record["sites"])


def _run_resumably(space: Workspace, run: Callable[[], dict]) -> dict:
    try:
        return run()
    except KeyboardInterrupt:
        if latest_checkpoint(space.run_dir) is not None:
            console.print(
                f"continue from the last checkpoint with 'insite demo --resume --workspace {space.root}'",
                highlight=False,
                soft_wrap=True,
            )
        raise


def _report_ledgers(space: Workspace, sites: list[str]) -> None:
    """What left each site, from its own egress ledger, and whether that record is intact."""
    for name in sites:
        ledger = Ledger(space.site(name, 1).context.cache_path)
        entries, check = ledger.entries(), ledger.verify()
        sent = sum(entry.get("bytes", 0) for entry in entries)
        state = "intact" if check.intact else f"[bold red]NOT intact[/]: {check.problems[0]}"
        console.print(
            f"{name} egress ledger: {len(entries)} replies, {sent / 1e6:.1f} MB, {state} "
            f"('insite site ledger show --cache {ledger.path.parent}')",
            highlight=False,
            soft_wrap=True,
        )


def _resume(
    space: Workspace, faults: Callable[[Workspace, RunSettings], Callable[[ProcessSet], Chaos]] | None, compare: bool
) -> None:
    """The rounds that remain, from the last checkpoint; round numbers continue where they stopped."""
    settings, done, checkpoint = resume_point(space.run_dir)
    console.print(f"resuming {space.run_dir} after round {done} of {settings.rounds} from {checkpoint.name}")
    with _dashboard(space):
        _finish(
            space, _run_resumably(space, lambda: run_and_report(space, settings, time.monotonic(), faults)), compare
        )


def _compare(space: Workspace, settings: RunSettings) -> None:
    """Local-only models at the sites, then the federated evaluation against the consensus model."""
    started = time.monotonic()
    done = dict.fromkeys(space.site_names(), 0)

    def show(site: str, rounds: int) -> None:
        done[site] = rounds
        status.update("local-only models at the sites, rounds done: " + ", ".join(f"{s} {n}" for s, n in done.items()))

    with console.status(f"local-only models at the sites ({settings.rounds} rounds each)") as status:
        failed = train_local_only_models(space, settings, show)
    for error in failed.values():
        console.print(f"[yellow]no local-only model:[/] {error}", highlight=False, soft_wrap=True)
    console.print(f"the sites trained their local-only models at home in {time.monotonic() - started:.0f} s")
    result = compare_with_local_only(space, settings, _event)
    print_evaluation(result)
    plot = plot_evaluation(result, space.evaluation_dir / "evaluation.png")
    console.print(
        f"federated evaluation in {time.monotonic() - started:.0f} s in all (local-only training included); "
        f"plot {plot}; the same with 'insite coord evaluate --local-only --personalised MODEL...'",
        highlight=False,
        soft_wrap=True,
    )


def _publish(space: Workspace, sites: list[str]) -> None:
    """Every site approves the drafted manifest with its node key; export and verify the bundle."""
    console.print("[bold]publishing the consensus model[/] (shared-assets manifest, site approvals)")
    result = demo_publish(
        space.run_dir,
        {n: space.site(n, 1).private_key for n in sites},
        space.root / "publish",
        consortium_keys=space.consortium.root / "sites",
    )
    for line in result.summary():
        console.print(line, highlight=False)
