"""The coordinator's public endpoint: an nginx TLS proxy that lets sites reach only the Fleet API.

Why: Flower 1.41's SuperLink serves the Fleet API (SuperNodes), the Control API (submit runs,
register nodes, list runs) and the Runtime API (ServerApp) on ONE HTTPS port, and the open-source
Control API has no authentication: whoever reaches that port can ship code to every site. So the
SuperLink listens on loopback only, and the address sites use is nginx, which

* terminates TLS with the SuperLink's own certificate (sites verify it against the consortium CA),
* forwards exactly the Fleet routes a SuperNode calls (POST only) to the SuperLink, again over
  TLS verified against the consortium CA, so no hop on the coordinator is plaintext either, and
* answers every other request 403 itself: it never reaches the SuperLink.

Node authentication stays end to end: the SuperNode's signed headers pass through unchanged and
the SuperLink checks them. nginx runs in the foreground as a child of the launcher, with its
configuration, pid file and temp folders in the workspace, never in /etc or /var.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from common.errors import LaunchError, ProvisioningError
from deploy.host.processes import (
    LOOPBACK,
    ManagedProcess,
    ProcessSet,
    RestartPolicy,
    require_port_free,
    wait_for_port,
)

# What a SuperNode calls: the paths of flwr.supernode.fleet_http_client.FleetHttpClient.
# Listed, not prefix-matched, so a route a later Flower adds under /v1/fleet/ stays closed until
# someone reads it; tests/security/test_proxy.py fails when this drifts from the installed Flower.
FLEET_ROUTES = (
    "register-node",
    "activate-node",
    "deactivate-node",
    "unregister-node",
    "send-node-heartbeat",
    "pull-messages",
    "push-messages",
    "get-run",
    "get-fab",
    "push-object",
    "pull-object",
    "confirm-message-received",
)
FLEET_PREFIX = "/v1/fleet/"

INSTALL_HINT = "install Debian's nginx-light ('make system-deps' as root, or apt-get install nginx-light)"


@dataclass(frozen=True)
class ProxySpec:
    """Where the proxy listens, where it forwards, and the TLS files it uses for both hops."""

    public_host: str
    public_port: int
    superlink_port: int
    certificate: Path
    private_key: Path
    ca_certificate: Path
    workdir: Path
    log_dir: Path

    @property
    def config_path(self) -> Path:
        return self.workdir / "nginx.conf"


def nginx_path() -> str | None:
    """The nginx binary, if installed; /usr/sbin is searched too: it is often off a user's PATH."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def find_nginx() -> str:
    found = nginx_path()
    if found is None:
        raise LaunchError(f"nginx not found: the coordinator's public proxy needs it; {INSTALL_HINT}")
    return found


def upstream_name(certificate: Path) -> str:
    """The DNS name nginx checks the SuperLink's certificate against on the loopback hop.

    nginx matches host names only (never IP SANs), so this is the certificate's first DNS SAN.
    """
    try:
        cert = x509.load_pem_x509_certificate(certificate.read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound) as error:
        raise ProvisioningError(f"{certificate}: cannot read the SuperLink certificate's names ({error})") from None
    names = sans.get_values_for_type(x509.DNSName)
    if not names:
        raise ProvisioningError(
            f"{certificate}: the SuperLink certificate has no DNS name; "
            "the proxy needs one (e.g. localhost) to verify it"
        )
    return names[0]


ACCESS_LOG = "proxy-access.log"


def _worker_user() -> str:
    """nginx drops its workers to this user when started as root (they only relay bytes)."""
    if os.geteuid() != 0:
        return ""
    nobody = pwd.getpwnam("nobody")
    return f"user nobody {grp.getgrgid(nobody.pw_gid).gr_name};\n"


def render_config(spec: ProxySpec) -> str:
    """nginx.conf for ``spec``: one TLS server, the Fleet routes forwarded, everything else 403.

    The forwarded URI is rebuilt from the matched route name, so no encoding, dot-segment or
    query-string trick can make nginx's reading and the SuperLink's reading of a path differ.
    Buffering is off in both directions: weight updates are tens of MB, and relaying them as they
    arrive adds no disk writes and no store-and-forward delay to a round.
    """
    host = f"[{spec.public_host}]" if ":" in spec.public_host else spec.public_host
    temp = spec.workdir / "temp"
    routes = "|".join(FLEET_ROUTES)
    return f"""# Written by insite deploy/coordinator/proxy.py at every start; edits are overwritten.
{_worker_user()}worker_processes 1;
daemon off;
pid {spec.workdir / "nginx.pid"};
error_log stderr notice;
events {{ worker_connections 512; }}
http {{
    # Bytes per request in both directions (HTTP/2, before TLS framing): what a site sent and got.
    # $msec (epoch seconds to the millisecond) lines requests up with a round's timeline.
    log_format insite '$time_iso8601 $msec $remote_addr "$request" $status $request_length $bytes_sent '
                      '$request_time';
    access_log {spec.log_dir / ACCESS_LOG} insite;
    server_tokens off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    client_max_body_size 0;  # the SuperLink enforces its own message limit
    proxy_request_buffering off;
    proxy_buffering off;
    proxy_read_timeout 300s;
    proxy_send_timeout 300s;

    upstream superlink {{
        server {LOOPBACK}:{spec.superlink_port};
        keepalive 16;
    }}

    server {{
        listen {host}:{spec.public_port} ssl;
        ssl_certificate {spec.certificate};
        ssl_certificate_key {spec.private_key};
        ssl_protocols TLSv1.2 TLSv1.3;

        location ~ ^{FLEET_PREFIX}(?<route>{routes})$ {{
            limit_except POST {{ deny all; }}
            # the SuperLink sees the route nginx matched, never the client's raw URI
            proxy_pass https://superlink{FLEET_PREFIX}$route;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {spec.ca_certificate};
            proxy_ssl_name {upstream_name(spec.certificate)};
            proxy_ssl_session_reuse on;
        }}

        location / {{
            return 403;
        }}
    }}
}}
"""


def _check_config(nginx: str, spec: ProxySpec) -> None:
    done = subprocess.run(
        [nginx, "-t", *_nginx_args(spec)], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30
    )
    if done.returncode != 0:
        detail = " ".join(line for line in done.stderr.splitlines() if "emerg" in line or "crit" in line)
        raise LaunchError(f"nginx refused the proxy configuration {spec.config_path}: {detail or done.stderr.strip()}")


def _nginx_args(spec: ProxySpec) -> list[str]:
    # -e: nginx writes start-up errors before it has read error_log from the configuration
    return ["-p", str(spec.workdir), "-c", str(spec.config_path), "-e", "stderr"]


def start_proxy(processes: ProcessSet, spec: ProxySpec, timeout: float = 30.0) -> ManagedProcess:
    """Write the configuration, check it with ``nginx -t``, start nginx and wait for its port."""
    nginx = find_nginx()
    require_port_free(spec.public_host, spec.public_port)
    (spec.workdir / "temp").mkdir(parents=True, exist_ok=True)
    spec.log_dir.mkdir(parents=True, exist_ok=True)
    spec.config_path.write_text(render_config(spec))
    _check_config(nginx, spec)
    proxy = processes.start("proxy", [nginx, *_nginx_args(spec)], restart=RestartPolicy())
    wait_for_port(spec.public_host, spec.public_port, proxy, timeout)
    return proxy
