"""A whole run of the project's ServerApp and ClientApp in this process, over the stub Grid.

The apps run unchanged (see :mod:`deploy.in_process.grid`); only the transport is replaced. Tests
use it for fast runs with injected faults, benchmarks (``bench.fl_vs_pooled``) to compare training
regimes on exactly the code a federation runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from flwr.app import Context, RecordDict
from flwr.app.user_config import UserConfig

from client.app import app as client_app
from common.run_record import RunRecord
from common.settings import RunSettings, to_run_config
from deploy.in_process.grid import InProcessGrid, SiteNode
from server.app import main as server_main

FIRST_NODE_ID = 101


def site_grid(run_dir: Path, settings: RunSettings, site_folders: dict[str, Path], **faults: Any) -> InProcessGrid:
    """The stub Grid with one node per site (ids from 101, in ``site_folders`` order)."""
    run_config = _user_config(to_run_config(settings, run_dir))
    nodes = [
        SiteNode(
            node_id,
            site,
            Context(
                run_id=1,
                node_id=node_id,
                state=RecordDict(),
                run_config=run_config,
                node_config={
                    "site-name": site,
                    "data-path": str(folder),
                    "threads": 1,
                    "cache-path": str(run_dir.parent / "site-caches" / site),
                },
            ),
        )
        for node_id, (site, folder) in enumerate(site_folders.items(), start=FIRST_NODE_ID)
    ]
    return InProcessGrid(client_app, nodes, **faults)


def run_in_process(
    run_dir: Path,
    settings: RunSettings,
    grid: InProcessGrid,
    round_offset: int = 0,
    initial_weights: Path | None = None,
) -> RunRecord:
    """The project's ServerApp over ``grid``, as 'insite coord run' would start it."""
    record = RunRecord(run_dir)
    if not (run_dir / "run.json").exists():  # as 'insite demo' / 'insite coord run' do before submitting
        record.create("demo", settings, transport={"tls": True, "node_auth": True})
    run_config = _user_config(to_run_config(settings, run_dir, round_offset, initial_weights))
    server_main(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config))
    return record


def evaluate_in_process(run_dir: Path, settings: RunSettings, grid: InProcessGrid) -> RunRecord:
    """The ServerApp's evaluation task over ``grid``, on a run folder 'insite coord evaluate' prepared."""
    run_config = _user_config(to_run_config(settings.model_copy(update={"task": "evaluate"}), run_dir))
    server_main(grid, Context(run_id=2, node_id=0, node_config={}, state=RecordDict(), run_config=run_config))
    return RunRecord(run_dir)


def _user_config(run_config: dict[str, str | int]) -> UserConfig:
    # cast: Flower's Context takes an invariant dict of any config value, though it only reads it
    return cast(UserConfig, run_config)
