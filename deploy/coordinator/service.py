"""``insite coord launch``: the coordinator's SuperLink and proxy, in the foreground until Ctrl-C or SIGTERM.

It stops every process it started on the way out (Flower's children escape a plain kill, so all
run inside a :class:`deploy.host.processes.ProcessSet`).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

from common.errors import LaunchError, ProvisioningError
from deploy.coordinator.consortium import (
    CoordinatorDir,
    registered_sites,
    running_superlink,
    write_state,
)
from deploy.coordinator.dashboard.server import Binding, DashboardServer
from deploy.coordinator.dashboard.source import consortium_source
from deploy.coordinator.pki import days_left, load_certificate
from deploy.coordinator.superlink import SuperLink
from deploy.host.processes import ProcessSet, wait_until_stopped


def serve_superlink(
    coordinator: CoordinatorDir, on_event: Callable[[str], None], dashboard: Binding | None = None
) -> None:
    """SuperLink (TLS, node authentication) behind the Fleet-only proxy, every registered site let in.

    Registrations live in the SuperLink's database and survive its restarts; every site in
    ``sites/`` is registered again at each start (a no-op for those already there). With
    ``dashboard``, the coordinator's dashboard is served there for as long as the SuperLink runs.
    """
    running = running_superlink(coordinator)
    if running is not None:
        raise LaunchError(f"a SuperLink for {coordinator.root} is already running (pid {running['pid']})")
    settings = coordinator.settings()
    certificate = load_certificate(coordinator.files.server_cert, "SuperLink certificate")
    if days_left(certificate) < 0:
        raise ProvisioningError(
            f"{coordinator.files.server_cert}: expired on "
            f"{certificate.not_valid_after_utc:%Y-%m-%d}; run 'insite coord renew'"
        )
    board = DashboardServer(consortium_source(coordinator), dashboard) if dashboard else nullcontext()
    with ProcessSet(coordinator.logs, {}) as processes, board:
        superlink = SuperLink(coordinator.root, coordinator.files, processes, host=settings.listen, port=settings.port)
        private_port = superlink.start()
        sites = registered_sites(coordinator)
        for site in sites:
            superlink.register_key(site.name, site.public_key)
        write_state(coordinator, private_port, settings.address)
        try:
            on_event(
                f"SuperLink ready: sites connect to {settings.address} (listening on "
                f"{settings.listen}:{settings.port}, Fleet API only); {len(sites)} site(s) "
                f"registered ({', '.join(s.name for s in sites) or 'none yet'}); logs in "
                f"{coordinator.logs}. Ctrl-C stops it." + (f" Dashboard: {dashboard.login_url}" if dashboard else "")
            )
            wait_until_stopped(processes, on_event)
        finally:
            coordinator.state_path.unlink(missing_ok=True)
