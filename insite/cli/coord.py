"""``insite coord ...``: what the consortium coordinator runs, on the coordinator's own machine.

Every command works on one consortium folder (``--dir``, or ``$INSITE_CONSORTIUM``; layout in
:mod:`deploy.coordinator.consortium`). The order of a deployment: ``provision``, then per site ``kit`` and
``register-site``, then ``launch`` (stays in the foreground) and, in another terminal, ``run``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from common.run_record import RUN_RECORD, RunRecord, resume_point
from common.settings import load_run_settings
from configs import shipped
from deploy.coordinator.consortium import (
    CoordinatorDir,
    control_client,
    provision_consortium,
    register_site,
    registered_sites,
    renew,
    require_running,
    running_superlink,
    write_kit,
)
from deploy.coordinator.dashboard.server import DEFAULT_PORT, Binding, available_port, binding_for, serve
from deploy.coordinator.dashboard.source import consortium_source
from deploy.coordinator.evaluation import (
    file_with_training_runs,
    latest_result,
    prepare_evaluation,
    read_models,
    require_something_to_score,
)
from deploy.coordinator.pki import (
    certificate_fingerprint,
    certificate_names,
    days_left,
    load_certificate,
)
from deploy.coordinator.run_state import run_summary
from deploy.coordinator.run_supervisor import RunSupervisor
from deploy.coordinator.service import serve_superlink
from deploy.coordinator.statistics_plot import write_statistics_plot
from deploy.host.processes import LOOPBACK
from insite.cli.evaluation_report import plot_evaluation, print_evaluation
from insite.cli.run_report import report_run, round_printer
from insite.cli.stats_report import print_statistics
from insite.cli.terminal import command_group, console, err_console, run_paused, say

app = command_group()

SHIPPED_CONSORTIUM = shipped("consortium.toml")
SHIPPED_RUN_SETTINGS = shipped("federation.toml")

DIR = typer.Option(
    Path("consortium"),
    "--dir",
    envvar="INSITE_CONSORTIUM",
    help="The consortium folder: CA, certificates, registered sites, runs.",
)
JSON = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table.")


@app.command("provision")
def provision_command(
    config: Path = typer.Option(
        SHIPPED_CONSORTIUM,
        "--config",
        help="Consortium settings (TOML, \\[consortium] table): address, extra hostnames, validity days.",
    ),
    directory: Path = DIR,
    force: bool = typer.Option(
        False,
        "--force",
        help="Replace an existing CA. Every site trusts the old one: all of them need a new kit afterwards.",
    ),
) -> None:
    """Create the consortium CA and the coordinator's TLS certificate.

    The certificate names the address sites connect to, the extra hostnames from the config and
    loopback. Private keys are written 0600 under private/ and never leave this folder.
    """
    coordinator = CoordinatorDir(directory.resolve())
    settings = provision_consortium(coordinator, config, force)
    say(
        f"consortium '{settings.name}' provisioned in {coordinator.root}: CA valid "
        f"{settings.ca_days} days, coordinator certificate for {settings.address} valid "
        f"{settings.certificate_days} days.\nnext: 'insite coord kit NAME --out DIR' "
        "for each site, then 'insite coord register-site NAME node.pub'"
    )


@app.command("register-site")
def register_site_command(
    name: str = typer.Argument(..., help="The site's name, as in its site.toml."),
    public_key: Path = typer.Argument(..., help="The node.pub the site sent ('insite site keygen')."),
    directory: Path = DIR,
) -> None:
    """Let a site in: store its public key and, if the SuperLink runs, register it there now.

    Compare the printed fingerprint with the one the site administrator reads you.
    """
    coordinator = CoordinatorDir(directory.resolve())
    site, new = register_site(coordinator, name, public_key)
    say(f"site {name} {'registered' if new else 'was already registered'}: key {site.fingerprint}")
    if new and running_superlink(coordinator) is not None:
        control_client(coordinator).register_key(name, site.public_key)
        say("registered with the running SuperLink as well")


@app.command("sites")
def sites_command(directory: Path = DIR, as_json: bool = JSON) -> None:
    """List the registered sites and their key fingerprints."""
    sites = registered_sites(CoordinatorDir(directory.resolve()))
    if as_json:
        print(json.dumps([{"name": s.name, "fingerprint": s.fingerprint} for s in sites], indent=1))
        return
    table = Table(title=f"{len(sites)} registered site(s)")
    table.add_column("site")
    table.add_column("key fingerprint")
    for site in sites:
        table.add_row(site.name, site.fingerprint)
    console.print(table)


@app.command("kit")
def kit_command(
    name: str = typer.Argument(..., help="The site the kit is for."),
    out: Path = typer.Option(..., "--out", help="A new, empty folder to write the kit into."),
    directory: Path = DIR,
) -> None:
    """Write what a site needs to join: CA certificate, its site.toml, instructions.

    The kit holds no secret (no private key of the coordinator or of anyone): send it any way.
    """
    files = write_kit(CoordinatorDir(directory.resolve()), name, out.resolve())
    say(f"kit for site {name} in {out}: {', '.join(f.name for f in files)}")


@app.command("renew")
def renew_command(
    days: int = typer.Option(
        None, "--days", min=1, help="Validity of the new certificate (default: certificate_days from consortium.toml)."
    ),
    directory: Path = DIR,
) -> None:
    """Re-issue the coordinator's TLS certificate from the same CA, before it expires.

    Sites need nothing new: they trust the CA. A running SuperLink picks the new certificate up
    when it is launched again.
    """
    coordinator = CoordinatorDir(directory.resolve())
    valid = renew(coordinator, days)
    restart = " Restart 'insite coord launch' to use it." if running_superlink(coordinator) else ""
    say(f"new coordinator certificate {coordinator.files.server_cert}, valid {valid} days." + restart)


def _certificate_status(path: Path, what: str, warn_days: int) -> dict:
    cert = load_certificate(path, what)
    left = days_left(cert)
    return {
        "file": str(path),
        "expires": f"{cert.not_valid_after_utc:%Y-%m-%d}",
        "days_left": left,
        "renew": left < warn_days,
        "names": certificate_names(cert),
        "sha256": certificate_fingerprint(cert),
    }


@app.command("status")
def status_command(directory: Path = DIR, as_json: bool = JSON) -> None:
    """Certificate expiry, registered sites, whether the SuperLink is running, and the latest runs' state."""
    coordinator = CoordinatorDir(directory.resolve())
    settings = coordinator.settings()
    running = running_superlink(coordinator)
    status: dict[str, Any] = {
        "consortium": settings.name,
        "address": settings.address,
        "ca": _certificate_status(coordinator.files.ca_cert, "consortium CA certificate", settings.renew_before_days),
        "coordinator_certificate": _certificate_status(
            coordinator.files.server_cert, "SuperLink certificate", settings.renew_before_days
        ),
        "superlink": {"running": running is not None, "pid": running["pid"] if running else None},
        "sites": [{"name": s.name, "fingerprint": s.fingerprint} for s in registered_sites(coordinator)],
        "runs": _runs(coordinator),
    }
    if as_json:
        print(json.dumps(status, indent=1))
        return
    say(f"[bold]{settings.name}[/] ({coordinator.root}); sites connect to {settings.address}")
    for key, label in (("ca", "consortium CA"), ("coordinator_certificate", "coordinator certificate")):
        cert = status[key]
        style = "red" if cert["renew"] else "green"
        hint = "  [red]renew now: 'insite coord renew'[/]" if cert["renew"] and key != "ca" else ""
        say(
            f"{label}: expires {cert['expires']} ([{style}]{cert['days_left']} days[/])"
            f"  names: {', '.join(cert['names']) or '-'}{hint}"
        )
    say("SuperLink: " + (f"running (pid {running['pid']})" if running else "not running"))
    say(f"registered sites: {', '.join(s['name'] for s in status['sites']) or 'none'}")
    for run in status["runs"]:
        say(f"run {run['name']}: {escape(run['state'])}")


def _runs(coordinator: CoordinatorDir, latest: int = 5) -> list[dict]:
    """The latest runs of the consortium folder and the state each is in."""
    folders = sorted((coordinator.root / "runs").glob("*/run.json"), key=lambda p: p.stat().st_mtime)
    return [run_summary(path.parent, time.time()) for path in folders[-latest:]]


@app.command("launch")
def launch_command(
    directory: Path = DIR,
    dashboard: bool = typer.Option(
        True, "--dashboard/--no-dashboard", help="Serve the read-only dashboard on loopback while it runs."
    ),
    dashboard_port: int = typer.Option(
        DEFAULT_PORT, "--dashboard-port", min=1, max=65535, help="Its port (a free one if this is taken)."
    ),
) -> None:
    """Start the SuperLink (TLS, node authentication) and its public Fleet-only proxy.

    Runs in the foreground until Ctrl-C (or SIGTERM), then stops every process it started. The
    SuperLink itself listens on loopback only; sites reach just the Fleet API through the proxy
    at the consortium address. Every registered site is let in at start. The dashboard
    ('insite coord dashboard') runs alongside on http://127.0.0.1:PORT/.
    """
    coordinator = CoordinatorDir(directory.resolve())
    port = available_port(LOOPBACK, dashboard_port)  # a taken port must not keep the SuperLink down
    binding = binding_for(consortium_source(coordinator), LOOPBACK, port) if dashboard else None
    serve_superlink(coordinator, on_event=say, dashboard=binding)
    say("SuperLink stopped; every process it started is gone")


@app.command("dashboard")
def dashboard_command(
    directory: Path = DIR,
    host: str = typer.Option(
        LOOPBACK,
        "--host",
        help="Interface to listen on. Anything but loopback serves HTTPS with the consortium's certificate "
        "and requires the login token.",
    ),
    port: int = typer.Option(DEFAULT_PORT, "--port", min=1, max=65535, help="Port to listen on."),
    manifest: list[Path] = typer.Option(
        [],
        "--manifest",
        help="Shared-assets manifest(s) to show with their approvals (default: publish/*manifest*.toml "
        "in the consortium folder).",
    ),
    token: bool = typer.Option(
        False,
        "--token",
        help="Print the dashboard's login token (made on first use, kept 0600 in private/) and the "
        "address to open with it, then exit.",
    ),
) -> None:
    """Serve the coordinator's read-only web dashboard until Ctrl-C.

    Sites online or offline (the SuperLink's heartbeats), the current run's state, Dice per round
    as a live chart, per-round failures and timings, the run history and the publication
    manifest's approvals; the page polls the JSON API under /api, which scripts may use as well.
    It binds to 127.0.0.1 unless --host says otherwise.
    """
    coordinator = CoordinatorDir(directory.resolve())
    source = consortium_source(coordinator, tuple(path.resolve() for path in manifest))
    if token:
        remote = binding_for(source, host if host != LOOPBACK else coordinator.settings().host, port)
        if remote.token is None:
            say("a dashboard on loopback needs no token; give --host to the interface it will listen on")
            return
        print(remote.token)
        say(f"open {remote.login_url} (the token is then kept in a cookie)")
        return
    binding = binding_for(source, host, port)
    say(f"dashboard for {source.name}: {_open_address(binding)} (read-only; Ctrl-C stops it)")
    serve(source, binding)


def _open_address(binding: Binding) -> str:
    return binding.login_url if binding.token is None else f"{binding.url} (log in: 'insite coord dashboard --token')"


@app.command("run")
def run_command(
    config: Path = typer.Option(SHIPPED_RUN_SETTINGS, "--config", help="Run settings (TOML, \\[run] table)."),
    run_dir: Path = typer.Option(
        None,
        "--run-dir",
        help="Where checkpoints and metrics go (default: runs/<date-time> in the consortium folder). "
        "A folder holding an unfinished run is continued, so a restarted service picks up where it was.",
    ),
    directory: Path = DIR,
) -> None:
    """Submit a federated run to the launched SuperLink and see it through, round by round.

    The sites must have joined ('insite site join'); each round waits (bounded) for min_sites of
    them. A crashed coordinator is continued from the last checkpoint on its own; a run that
    waits too long for its sites pauses (exit code 3) and is continued with 'insite coord resume'.
    Ctrl-C stops the run.
    """
    coordinator = CoordinatorDir(directory.resolve())
    run_dir = (run_dir or coordinator.new_run_dir()).resolve()
    record = RunRecord(run_dir)
    existing = (run_dir / RUN_RECORD).exists()
    settings = None if existing else load_run_settings(config)  # a bad file is named before anything else
    require_running(coordinator)  # before the run folder is created
    if settings is None:
        if record.read().get("status") == "completed":
            say(f"{run_dir}: this run is complete; nothing to do")
            return
        say(f"continuing the run in {run_dir} (its own settings; --config is not read)")
    else:
        record.create(run_dir.name, settings, transport={"tls": True, "node_auth": True, "fleet_proxy": True})
    _see_through(coordinator, run_dir)


@app.command("resume")
def resume_command(
    run_dir: Path = typer.Argument(..., help="The run folder of the interrupted or paused run."),
    directory: Path = DIR,
) -> None:
    """Continue an interrupted or paused run from its last checkpoint with the rounds that remain.

    A new Flower run starts from that checkpoint; round numbers continue where the run stopped,
    and a round that was trained but not yet scored is scored first.
    """
    run_dir = run_dir.resolve()
    settings, done, checkpoint = resume_point(run_dir)
    say(f"resuming {run_dir} after round {done} of {settings.rounds} from {checkpoint.name}")
    _see_through(CoordinatorDir(directory.resolve()), run_dir)


def _see_through(coordinator: CoordinatorDir, run_dir: Path) -> None:
    started = time.monotonic()
    settings = RunRecord(run_dir).settings()
    supervisor = RunSupervisor(
        control_client(coordinator),
        run_dir,
        round_printer(settings),
        lambda event: say(f"[dim]{escape(event)}[/]"),
        settings.time_limit_s(),
    )
    try:
        record = supervisor.run()
    except KeyboardInterrupt:  # Ctrl-C stops the run itself, not only the watching of it
        if supervisor.run_id is not None:
            supervisor.bury(supervisor.run_id)
        say(f"stopped the run; continue it with 'insite coord resume {run_dir}'")
        raise
    report_run(run_dir, settings, record, started)
    if record.get("status") == "paused":
        raise run_paused(record, f"insite coord resume {run_dir}")


@app.command("stats")
def stats_command(
    config: Path = typer.Option(
        SHIPPED_RUN_SETTINGS,
        "--config",
        help="Run settings (TOML): min_sites, round_timeout_s of \\[run]; bins and minimum count of \\[run.stats].",
    ),
    directory: Path = DIR,
    as_json: bool = JSON,
) -> None:
    """Ask every site for its data statistics, before any training, and show the sites side by side.

    Each site reports binned counts of its training-ready cases (case counts, modality,
    orientation, voxel spacing and size, intensity histogram in raw scanner units, lesion volumes);
    no per-case value, minimum or maximum leaves a site, and counts below the minimum count are
    withheld. A site that fails is named with its reason; the others' statistics still come
    back. The result stays in the consortium folder (runs/<time>-stats/: run.json and
    statistics.png), where the dashboard shows it. A site administrator sees beforehand what
    the site would send with 'insite site stats --dry-run'.
    """
    coordinator = CoordinatorDir(directory.resolve())
    settings = load_run_settings(config).model_copy(update={"task": "stats"})
    require_running(coordinator)
    run_dir = coordinator.new_run_dir()
    run_dir = run_dir.with_name(f"{run_dir.name}-stats")
    RunRecord(run_dir).create(run_dir.name, settings, transport={"tls": True, "node_auth": True, "fleet_proxy": True})
    on_event = (lambda event: None) if as_json else (lambda event: say(f"[dim]{escape(event)}[/]"))
    supervisor = RunSupervisor(
        control_client(coordinator), run_dir, lambda row: None, on_event, settings.time_limit_s(1)
    )
    try:
        record = supervisor.run()
    except KeyboardInterrupt:  # Ctrl-C stops the request at the sites too
        if supervisor.run_id is not None:
            supervisor.bury(supervisor.run_id)
        raise
    if record.get("status") == "paused":
        raise run_paused(record, "insite coord stats")
    statistics = record["statistics"]
    plot = write_statistics_plot(statistics, run_dir / "statistics.png")
    if as_json:
        print(json.dumps({"run_dir": str(run_dir), "plot": str(plot), **statistics}, indent=1))
        return
    print_statistics(statistics)
    say(f"plot: {plot}; record: {run_dir / RUN_RECORD}")


@app.command("evaluate")
def evaluate_command(
    models: list[Path] = typer.Argument(
        None,
        help="Models to compare: insite checkpoints (run/checkpoints/round-NNNN.pt), folders of MONAI bundles "
        "('insite export' output, or a bundle from elsewhere whose network is a 3D UNet the sites build).",
    ),
    local_only: bool = typer.Option(
        False,
        "--local-only",
        help="Also score each site's own model, trained alone at the site ('insite site train-local'); "
        "only its scores leave the site.",
    ),
    personalised: bool = typer.Option(
        False,
        "--personalised",
        help="Also adapt each MODEL at every site to the site's own training cases (run settings "
        "training.personalise_steps and personalise_lr_fraction) and score the adapted model; "
        "it stays at the site, only its scores leave.",
    ),
    config: Path = typer.Option(
        SHIPPED_RUN_SETTINGS, "--config", help="Run settings (TOML, \\[run] table): min_sites and the waits."
    ),
    run_dir: Path = typer.Option(
        None, "--run-dir", help="Where the evaluation is recorded (default: runs/<date-time>-evaluation)."
    ),
    directory: Path = DIR,
    as_json: bool = JSON,
) -> None:
    """Score models on every site's held-out cases, without training, and compare them side by side.

    Per site: Dice, HD95 (MONAI's, in voxels) and the number of cases. A model whose network the
    sites cannot build is refused here, naming it and why, before any site is asked; a site that
    cannot score (no validation cases, no reply) is named with its reason, and the other sites'
    scores still come back. The result goes into the evaluation's run.json (the dashboard's run
    history), beside each training run whose checkpoint was scored, and into evaluation.png.
    """
    coordinator = CoordinatorDir(directory.resolve())
    settings = load_run_settings(config)
    accepted, refused = read_models([path.resolve() for path in models or []], settings.training.patch_size)
    require_something_to_score(accepted, refused, local_only)  # before anything else is touched
    for name, reason in refused.items():
        err_console.print(f"[bold red]refused[/] {escape(name)}: {escape(reason)}", highlight=False)
    require_running(coordinator)
    run_dir = (run_dir or Path(f"{coordinator.new_run_dir()}-evaluation")).resolve()
    transport = {"tls": True, "node_auth": True, "fleet_proxy": True}
    request = prepare_evaluation(run_dir, settings, accepted, refused, local_only, transport, personalised)
    supervisor = RunSupervisor(
        control_client(coordinator),
        run_dir,
        lambda row: None,
        lambda event: None if as_json else say(f"[dim]{escape(event)}[/]"),
        settings.time_limit_s(len(request.models)),  # each model: a wait for quorum and one exchange
    )
    supervisor.run()
    result = latest_result(run_dir)
    filed = file_with_training_runs(run_dir, result)
    plot = plot_evaluation(result, run_dir / "evaluation.png")
    if as_json:
        print(json.dumps({**result, "run_dir": str(run_dir), "plot": str(plot)}, indent=1))
        return
    print_evaluation(result)
    also = f"; also recorded in {', '.join(str(path) for path in filed)}" if filed else ""
    say(f"evaluation recorded in {run_dir / RUN_RECORD}, plot {plot}{also}")
