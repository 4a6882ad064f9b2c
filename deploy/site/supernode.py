"""Starting a site's SuperNode: behind the app-approval gate, with insite's short idle poll."""

from __future__ import annotations

import sys
from pathlib import Path

from client.site import SiteContext
from deploy.host.processes import LOOPBACK, ManagedProcess, ProcessSet, RestartPolicy
from deploy.site.clientapp_gate import install_gate
from deploy.site.supernode_launcher import poll_env


def start_supernode(
    processes: ProcessSet,
    superlink: str,
    ca_cert: Path,
    private_key: Path,
    context: SiteContext,
    port: int,
    gate_dir: Path,
) -> ManagedProcess:
    """A site's SuperNode connected to ``superlink``: for 'insite site join' and the demo.

    ``port`` is the SuperNode's own ClientApp API port, bound to loopback only.
    """
    return processes.start(
        f"supernode-{context.name}",
        [
            sys.executable,
            "-m",
            "deploy.site.supernode_launcher",
            "--superlink",
            superlink,
            "--root-certificates",
            str(ca_cert),
            "--auth-supernode-private-key",
            str(private_key),
            "--node-config",
            context.to_node_config(),
            "--host",
            LOOPBACK,
            "--port",
            str(port),
        ],
        extra_env={**install_gate(gate_dir, processes.env["PATH"]), **poll_env()},
        # same key, same node id: a restarted site takes part again from the next round
        restart=RestartPolicy(),
    )
