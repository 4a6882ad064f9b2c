"""Many synthetic sites on one machine: the project's ServerApp and ClientApp in Flower's simulation engine.

What a consortium of 100 hospitals would do to the coordinator cannot be tried with 100 real
SuperNodes on one host; Flower's simulation engine (Ray) runs the same apps with virtual nodes
instead: each message is handed to a ClientApp in one of a few Ray actor processes. Only what a
real deployment's processes would supply is added here: the run's settings (``flwr run`` passes
them as the run config) and each virtual node's site (``insite site join`` passes it as the node
config). Node authentication, TLS and the proxy do not exist in simulation; the round loop, the
strategy, the egress guard and the ledger run as in a federation.

Sites are synthetic (the demo's three scanner profiles in turn, each site its own draw), written
once per workspace and reused.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.common.constant import PARTITION_ID_KEY
from flwr.proto.node_pb2 import NodeInfo
from flwr.server.superlink.linkstate import LinkState
from flwr.serverapp import Grid, ServerApp

from client.app import app as site_app
from common.background import Background
from common.errors import ConfigError
from common.run_record import RunRecord
from common.settings import RunSettings, to_run_config
from deploy.demo.synthetic_sites import DEMO_SITES, write_site
from server.app import main as coordinator_main
from server.grid_wrapper import GridWrapper

SITE_PREFIX = "sim"
SITE_CASES = (2, 1, 32)  # each synthetic site: training volumes, held-out volumes, edge in voxels
MB = 1024 * 1024


def site_name(index: int) -> str:
    return f"{SITE_PREFIX}-{index:03d}"


def write_sites(
    root: Path, count: int, train: int, val: int, size: int, on_site: Callable[[int], None] = lambda index: None
) -> Path:
    """``count`` synthetic sites under ``root`` (kept from an earlier call with the same shape)."""
    shape = f"{train} {val} {size}\n"
    for index in range(count):
        folder = root / site_name(index)
        if (folder / "shape").is_file() and (folder / "shape").read_text() == shape:
            continue
        profile = dataclasses.replace(DEMO_SITES[index % len(DEMO_SITES)], name=site_name(index))
        write_site(profile, folder / "data", train, val, size, seed=index)
        (folder / "shape").write_text(shape)
        on_site(index)
    return root


def _as_deployed(sites: Path, run_dir: Path, run_config: dict[str, str | int]) -> Mod:
    """A mod giving each virtual node the run config and node config a deployed SuperNode would have.

    The site's app gets its own Context (sharing the node's state): the engine refuses a
    ClientApp that changes its run config, and this one must not leak into the next message.
    """

    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        name = site_name(int(context.node_config[PARTITION_ID_KEY]))
        node_config = {
            **context.node_config,
            "site-name": name,
            "data-path": str(sites / name / "data"),
            "cache-path": str(run_dir.parent / "site-caches" / name),
            "threads": 1,
        }
        as_deployed = Context(
            run_id=context.run_id,
            node_id=context.node_id,
            node_config=node_config,
            state=context.state,
            run_config={**context.run_config, **run_config},
        )
        return call_next(msg, as_deployed)

    return mod


class _NamedSites(GridWrapper):
    """The engine's Grid, its virtual nodes named as the sites they play (as registered names are).

    The engine registers node ``i`` (partition ``i``) as the ``i``-th node of its in-memory state,
    and the mod above gives that node site ``i``'s data: naming nodes in registration order makes
    the coordinator's names the sites' own (tests/federation/test_simulation.py checks they agree).
    """

    def get_nodes(self) -> Iterable[NodeInfo]:
        order = {node.node_id: index for index, node in enumerate(self._state().get_node_info())}
        nodes = list(self.wrapped.get_nodes())
        for node in nodes:
            node.name = site_name(order[node.node_id])
        return nodes

    def _state(self) -> LinkState:
        state = getattr(self.wrapped, "state", None)
        if not isinstance(state, LinkState):
            raise ConfigError("this Flower version's simulation Grid has no in-memory state to name its nodes from")
        return state


def simulation_apps(settings: RunSettings, run_dir: Path, sites: Path) -> tuple[ServerApp, ClientApp]:
    """The coordinator's ServerApp and the sites' ClientApp, given what their processes would be given."""
    run_config = to_run_config(settings, run_dir)
    server = ServerApp()

    @server.main()
    def coordinate(grid: Grid, context: Context) -> None:
        context.run_config.update(run_config)
        coordinator_main(_NamedSites(grid), context)

    # These mods wrap the site's whole app, its own mods (packing, ledger, egress guard) included.
    # A simulation trains: the messages of a training run (train, and the last round's evaluate).
    client = ClientApp(mods=[_as_deployed(sites, run_dir, run_config)])

    @client.train()
    def train(msg: Message, context: Context) -> Message:
        return site_app(msg, context)

    @client.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return site_app(msg, context)

    return server, client


@dataclass(frozen=True)
class SimulationResult:
    status: str
    round_seconds: list[float]  # wall time of each round, as the round loop recorded it
    seconds: float  # the whole simulation: engine start, rounds, final evaluation, engine stop
    peak_rss_mb: float  # the coordinator's process (ServerApp and the engine; sites run in Ray actors)

    @property
    def rounds_per_minute(self) -> float:
        return _per_minute(self.round_seconds)

    @property
    def rounds_per_minute_after_first(self) -> float:
        """Without round 1, which also pays for starting the Ray actors and their imports."""
        return _per_minute(self.round_seconds[1:])


def _per_minute(seconds: list[float]) -> float:
    return 60 * len(seconds) / sum(seconds) if seconds and sum(seconds) > 0 else 0.0


class _Watch:
    """Samples this process's resident memory every 0.2 s and reports each round as it closes.

    Resident memory is sampled rather than read from ru_maxrss, which would include writing the sites.
    """

    def __init__(self, record: RunRecord, on_round: Callable[[dict], None]) -> None:
        self.peak = 0
        self._record = record
        self._on_round = on_round
        self._reported = 0

    def watch(self, stop: threading.Event) -> None:
        statm = Path(f"/proc/{os.getpid()}/statm")
        page = resource.getpagesize()
        ticks = 0
        while not stop.wait(0.2):
            self.peak = max(self.peak, int(statm.read_text().split()[1]) * page)
            ticks += 1
            if ticks % 5 == 0:
                self.report_rounds()

    def report_rounds(self) -> None:
        rows = self._record.rounds()
        for row in rows[self._reported :]:
            self._on_round(row)
        self._reported = len(rows)


def simulate(
    workspace: Path,
    settings: RunSettings,
    sites: int,
    cpus: int,
    site_cases: tuple[int, int, int] = SITE_CASES,
    on_round: Callable[[dict], None] = lambda row: None,
) -> SimulationResult:
    """Run ``settings`` with ``sites`` virtual sites, ``cpus`` ClientApps at a time; the run folder is workspace/run.

    ``site_cases`` is each synthetic site's (training volumes, held-out volumes, edge in voxels).
    """
    from flwr.simulation import run_simulation  # noqa: PLC0415  (imports Ray: only when a simulation runs)

    if settings.min_sites > sites:
        raise ConfigError(f"min_sites {settings.min_sites} is more than the {sites} simulated sites")
    site_root = write_sites(workspace / "sites", sites, *site_cases)
    run_dir = workspace / "run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
        shutil.rmtree(workspace / "site-caches", ignore_errors=True)
    record = RunRecord(run_dir)
    record.create("simulation", settings, transport={"simulation": True, "sites": sites})
    server, client = simulation_apps(settings, run_dir, site_root)
    started = time.monotonic()
    watch = _Watch(record, on_round)
    with Background("simulation-watch", watch.watch):
        # Flower 1.42 marks run_simulation deprecated in favour of `flwr run` against a simulation
        # SuperLink, which would need the app built and installed as a FAB for each run; this is
        # the same engine (Ray backend, virtual nodes), started in this process.
        run_simulation(
            server,
            client,
            num_supernodes=sites,
            backend_config={
                "client_resources": {"num_cpus": 1, "num_gpus": 0},
                "init_args": {"num_cpus": cpus, "include_dashboard": False},
            },
        )
    watch.report_rounds()
    return SimulationResult(
        status=str(record.read().get("status")),
        round_seconds=[float(row["wall_s"]) for row in record.rounds()],
        seconds=time.monotonic() - started,
        peak_rss_mb=watch.peak / MB,
    )
