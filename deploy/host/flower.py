"""How every Flower process started by insite is run: its environment, its commands, the CLI's connection.

No Flower process may reach beyond the consortium: telemetry, update checks and runtime dependency
installation are off in each.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import tomli_w

from client.host_memory import RETURN_LARGE_BLOCKS_ENV

#: The name of the ``flwr`` CLI connection the coordinator's own commands use.
CONNECTION = "insite"


def flower_env(flwr_home: Path) -> dict[str, str]:
    """Environment for every Flower process started here."""
    env = dict(os.environ)
    env.update(
        {
            "FLWR_HOME": str(flwr_home),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            # Large freed blocks go back to the host at once, except while a site computes
            # (client/host_memory.py says why both).
            **RETURN_LARGE_BLOCKS_ENV,
            "PYTHONWARNINGS": "ignore",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        }
    )
    return env


def flower_tool(name: str) -> str:
    """A Flower command of this environment (``flwr``, ``flower-superlink``), else from ``PATH``."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


def write_connection(flwr_home: Path, address: str, ca_cert: Path) -> None:
    """Make ``address`` the default ``flwr`` CLI connection (named ``insite``) under ``flwr_home``."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    config = {"superlink": {"default": CONNECTION, CONNECTION: {"address": address, "root-certificates": str(ca_cert)}}}
    (flwr_home / "config.toml").write_text(tomli_w.dumps(config))
