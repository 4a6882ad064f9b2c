"""``insite site join``: this site's SuperNode, in the foreground until Ctrl-C or SIGTERM.

Everything that can be checked before a start is checked first, so a missing key or an empty data
folder is one clear error instead of a SuperNode that retries forever.
"""

from __future__ import annotations

from collections.abc import Callable

from client.cases import discover_cases
from client.data import check_readable
from client.site import SiteContext
from deploy.coordinator.pki import load_certificate
from deploy.host.flower import flower_env
from deploy.host.processes import (
    LOOPBACK,
    ProcessSet,
    require_port_free,
    wait_until_stopped,
)
from deploy.node_keys import load_site_private_key
from deploy.site.app_approval import approvals
from deploy.site.settings import SiteSettings
from deploy.site.supernode import start_supernode


def check_site(settings: SiteSettings) -> tuple[int, int]:
    """Everything a SuperNode needs, checked before it starts; returns (training, validation) cases."""
    load_certificate(settings.root_certificates, "consortium CA certificate (from the kit)")
    load_site_private_key(settings.private_key)
    cases = discover_cases(settings.name, settings.data_path)
    for case in cases:
        check_readable(settings.name, case)
    require_port_free(LOOPBACK, settings.node_port)
    train = sum(case.split == "train" for case in cases)
    return train, len(cases) - train


def serve_site(settings: SiteSettings, on_event: Callable[[str], None]) -> None:
    """This site's SuperNode, connected to the coordinator and behind the app-approval gate."""
    train, val = check_site(settings)
    context = SiteContext(
        settings.name,
        settings.data_path,
        settings.cache_path,
        settings.device,
        settings.threads,
        settings.stats_min_count,
    )
    flwr_home = settings.cache_path / "flwr-home"
    with ProcessSet(settings.cache_path / "logs", flower_env(flwr_home)) as processes:
        supernode = start_supernode(
            processes,
            settings.superlink,
            settings.root_certificates,
            settings.private_key,
            context,
            settings.node_port,
            settings.cache_path / "gate",
        )
        on_event(
            f"site {settings.name}: {train} training and {val} validation case(s) checked; "
            f"SuperNode connecting to {settings.superlink}; log {supernode.log_path}. "
            "Ctrl-C stops it."
        )
        if not approvals(settings.cache_path):
            on_event(
                "warning: no app is approved yet, so this site refuses every run until "
                f"'insite site approve-app APP --cache {settings.cache_path}'"
            )
        wait_until_stopped(processes, on_event)
