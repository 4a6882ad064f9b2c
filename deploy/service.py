"""Long-running processes of a real deployment: the coordinator's SuperLink, one site's SuperNode.

Each runs in the foreground until Ctrl-C, or SIGTERM (how systemd and container runtimes stop a
service), and then stops every process it started: Flower's children escape a plain kill, so
both run inside a :class:`deploy.processes.ProcessSet`. Everything that can be checked before a
start is checked first, so a missing key or an empty data folder is one clear error instead of a
SuperNode that retries forever.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable

from client.cases import discover_cases
from client.data import check_readable
from client.site import SiteContext
from common.config import SiteSettings
from common.errors import LaunchError, ProvisioningError
from deploy.app_approval import approvals
from deploy.consortium import CoordinatorDir, registered_sites, running_superlink, write_state
from deploy.federation import LocalFederation, flower_env, start_supernode
from deploy.pki import days_left, load_certificate, load_site_private_key
from deploy.processes import ProcessSet, require_port_free
from deploy.proxy import LOOPBACK

log = logging.getLogger(__name__)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def wait_until_stopped(processes: ProcessSet, poll: float = 1.0) -> None:
    """Return on Ctrl-C or SIGTERM; raise :class:`LaunchError` (naming it) if a child dies first."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        while True:
            processes.check_all_alive()
            time.sleep(poll)
    except KeyboardInterrupt:
        log.info("stop requested")
    finally:
        signal.signal(signal.SIGTERM, previous)


def serve_superlink(coordinator: CoordinatorDir, on_event: Callable[[str], None]) -> None:
    """SuperLink (TLS, node authentication) behind the Fleet-only proxy, every registered site let in.

    The SuperLink keeps no database, so registrations are replayed from ``sites/`` at each start.
    """
    running = running_superlink(coordinator)
    if running is not None:
        raise LaunchError(f"a SuperLink for {coordinator.root} is already running (pid {running['pid']})")
    settings = coordinator.settings()
    certificate = load_certificate(coordinator.files.server_cert, "SuperLink certificate")
    if days_left(certificate) < 0:
        raise ProvisioningError(f"{coordinator.files.server_cert}: expired on "
                                f"{certificate.not_valid_after_utc:%Y-%m-%d}; run 'insite coord renew'")
    with ProcessSet(coordinator.logs, {}) as processes:
        federation = LocalFederation(coordinator.root, coordinator.files, processes,
                                     host=settings.listen, port=settings.port)
        federation.start_superlink()
        sites = registered_sites(coordinator)
        for site in sites:
            federation.register_key(site.name, site.public_key)
        write_state(coordinator, federation.superlink_port, settings.address)
        try:
            on_event(f"SuperLink ready: sites connect to {settings.address} (listening on "
                     f"{settings.listen}:{settings.port}, Fleet API only); {len(sites)} site(s) "
                     f"registered ({', '.join(s.name for s in sites) or 'none yet'}); logs in "
                     f"{coordinator.logs}. Ctrl-C stops it.")
            wait_until_stopped(processes)
        finally:
            coordinator.state_path.unlink(missing_ok=True)


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
    context = SiteContext(settings.name, settings.data_path, settings.cache_path,
                          settings.device, settings.threads)
    flwr_home = settings.cache_path / "flwr-home"
    with ProcessSet(settings.cache_path / "logs", flower_env(flwr_home)) as processes:
        supernode = start_supernode(processes, settings.superlink, settings.root_certificates,
                                    settings.private_key, context, settings.node_port,
                                    settings.cache_path / "gate")
        on_event(f"site {settings.name}: {train} training and {val} validation case(s) checked; "
                 f"SuperNode connecting to {settings.superlink}; log {supernode.log_path}. "
                 "Ctrl-C stops it.")
        if not approvals(settings.cache_path):
            on_event("warning: no app is approved yet, so this site refuses every run until "
                     f"'insite site approve-app APP --cache {settings.cache_path}'")
        wait_until_stopped(processes)
