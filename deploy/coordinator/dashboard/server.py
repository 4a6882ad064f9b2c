"""Serving the dashboard: loopback by default; beyond loopback only with TLS and a login token.

``insite coord dashboard`` serves it in the foreground; ``insite coord launch`` and ``insite demo``
run a :class:`DashboardServer` in a background thread that ends with them. Every wait here is
bounded: the server has a few seconds to start listening and to stop.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import uvicorn

from common.errors import LaunchError
from common.files import require_file
from deploy.coordinator.dashboard.app import create_app
from deploy.coordinator.dashboard.source import DashboardSource
from deploy.host.processes import LOOPBACK, free_port, require_port_free

log = logging.getLogger(__name__)

DEFAULT_PORT = 8471
START_S = 15.0
STOP_S = 10.0


class DashboardError(LaunchError):
    """The dashboard cannot be served as asked (port taken, no certificate for TLS, token unreadable)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost may resolve anywhere
        return False


def ensure_token(path: Path) -> str:
    """The dashboard's login token, created (0600, random) the first time it is needed."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        token = path.read_text(encoding="utf-8").strip()
        if not token:
            raise DashboardError(f"{path}: the dashboard token file is empty; delete it to make a new one") from None
        return token
    except OSError as error:
        raise DashboardError(f"{path}: cannot create the dashboard token ({error.strerror})") from None
    token = secrets.token_urlsafe(32)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
    return token


@dataclass(frozen=True)
class Binding:
    """Where and how the dashboard listens; beyond loopback it carries TLS files and the token."""

    host: str
    port: int
    certificate: Path | None = None
    private_key: Path | None = None
    token: str | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.certificate else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}/"

    @property
    def login_url(self) -> str:
        """The address a person opens: with the token once, which the page swaps for a cookie."""
        return f"{self.url}?token={self.token}" if self.token else self.url


def available_port(host: str, preferred: int = DEFAULT_PORT) -> int:
    """``preferred``, or a free port when something holds it (a demo beside a running coordinator)."""
    try:
        require_port_free(host, preferred)
    except LaunchError:
        return free_port(host)
    return preferred


def binding_for(source: DashboardSource, host: str = LOOPBACK, port: int = DEFAULT_PORT) -> Binding:
    """Loopback: plain HTTP, no token. Anywhere else: the consortium's TLS certificate and the token."""
    if is_loopback(host):
        return Binding(host, port)
    certificate = require_file(source.pki.server_cert, "coordinator TLS certificate (for the dashboard)")
    private_key = require_file(source.pki.server_key, "coordinator TLS private key (for the dashboard)")
    return Binding(host, port, certificate, private_key, ensure_token(source.token_path))


def _server(source: DashboardSource, binding: Binding) -> uvicorn.Server:
    try:
        require_port_free(binding.host, binding.port)
    except LaunchError as error:
        raise DashboardError(f"dashboard: {error}") from None
    config = uvicorn.Config(
        create_app(source, binding.token),
        host=binding.host,
        port=binding.port,
        ssl_certfile=str(binding.certificate) if binding.certificate else None,
        ssl_keyfile=str(binding.private_key) if binding.private_key else None,
        log_config=None,  # the application's own logging setup stays as it is
        access_log=False,
        lifespan="off",
        ws="none",  # the page polls; no websockets
    )
    return uvicorn.Server(config)


def serve(source: DashboardSource, binding: Binding) -> None:
    """Serve in the foreground until Ctrl-C or SIGTERM (uvicorn handles both)."""
    _server(source, binding).run()


class DashboardServer:
    """``with DashboardServer(source, binding):`` the dashboard runs in a thread for the block's duration."""

    def __init__(self, source: DashboardSource, binding: Binding) -> None:
        self.binding = binding
        self._server = _server(source, binding)
        self._thread = threading.Thread(target=self._server.run, name="dashboard", daemon=True)

    def __enter__(self) -> DashboardServer:
        self._thread.start()
        deadline = time.monotonic() + START_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._stop()
                raise DashboardError(
                    f"the dashboard did not start listening on {self.binding.url} within {START_S:.0f} s"
                )
            time.sleep(0.05)
        log.info("dashboard listening on %s", self.binding.url)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop()

    def _stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(STOP_S)
        if self._thread.is_alive():
            log.warning("the dashboard thread did not stop within %.0f s", STOP_S)
