"""The coordinator's consortium folder: its PKI, the registered sites, site kits, the live SuperLink.

Everything the coordinator keeps between commands lives in one folder (``insite coord --dir``)::

    consortium.toml        the settings 'provision' was given (renew, kit and launch read them)
    ca.pem                 consortium CA certificate: goes into every site kit
    superlink.pem          the coordinator's TLS certificate (SANs: its address and hostnames)
    private/               ca.key, superlink.key (0600; never leave this folder)
    sites/<name>.pub       registered site public keys (OpenSSH, ECDSA)
    superlink.json         exists while 'insite coord launch' runs: its pid and addresses
    flwr-home/ logs/ proxy/ app/   Flower CLI connection, process logs, nginx files, staged app
    runs/<stamp>/          run directories (common.run_record layout)

A demo workspace's ``consortium/`` folder has the same PKI layout (:class:`deploy.coordinator.pki.ConsortiumFiles`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from common.errors import ConfigError, LaunchError, ProvisioningError
from common.keys import fingerprint
from common.validation import SITE_NAME_PATTERN
from configs import shipped
from deploy.coordinator.pki import (
    LOOPBACK_NAMES,
    ConsortiumFiles,
    certificate_fingerprint,
    create_ca,
    issue_server_certificate,
    load_certificate,
)
from deploy.coordinator.settings import ConsortiumSettings, load_consortium_settings
from deploy.coordinator.superlink import SuperLink
from deploy.host.processes import LOOPBACK, ProcessSet
from deploy.node_keys import load_site_public_key
from deploy.site.settings import load_site_settings

SITE_TEMPLATE = shipped("site.toml")


@dataclass(frozen=True)
class RegisteredSite:
    name: str
    public_key: Path
    fingerprint: str


@dataclass(frozen=True)
class CoordinatorDir:
    """One consortium folder; every ``insite coord`` command works on one of these."""

    root: Path

    @property
    def files(self) -> ConsortiumFiles:
        return ConsortiumFiles(self.root)

    @property
    def settings_path(self) -> Path:
        return self.root / "consortium.toml"

    @property
    def state_path(self) -> Path:
        return self.root / "superlink.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def settings(self) -> ConsortiumSettings:
        if not self.settings_path.is_file():
            raise ProvisioningError(
                f"{self.settings_path}: not found; {self.root} is not a "
                "provisioned consortium folder (run 'insite coord provision')"
            )
        return load_consortium_settings(self.settings_path)

    def new_run_dir(self) -> Path:
        return self.root / "runs" / time.strftime("%Y%m%d-%H%M%S")


def server_names(settings: ConsortiumSettings) -> list[str]:
    """SANs of the coordinator's certificate, public address first (it becomes the subject CN).

    Loopback names are always included: behind the Fleet-only proxy the SuperLink listens on
    loopback, and the coordinator's own ``flwr`` CLI and the proxy verify it there.
    """
    return list(dict.fromkeys([settings.host, *settings.hostnames, *LOOPBACK_NAMES]))


def provision_consortium(coordinator: CoordinatorDir, config: Path, force: bool = False) -> ConsortiumSettings:
    """Create the consortium CA and the coordinator's certificate from ``config``.

    An existing CA is kept unless ``force``: every site trusts it, and a new one means new kits
    for all of them. Registered site keys do not depend on the CA and survive ``force``.
    """
    settings = load_consortium_settings(config)
    files = coordinator.files
    if files.ca_cert.exists() or files.ca_key.exists():
        if not force:
            raise ProvisioningError(
                f"{files.ca_cert}: a consortium CA exists already; every site "
                "trusts it. Use --force to replace it (all sites need new kits)"
            )
        for old in (files.ca_key, files.server_key):
            old.unlink(missing_ok=True)
    coordinator.root.mkdir(parents=True, exist_ok=True)
    create_ca(files, f"{settings.name} CA", settings.ca_days)
    issue_server_certificate(files, server_names(settings), settings.certificate_days)
    if config.resolve() != coordinator.settings_path.resolve():
        shutil.copyfile(config, coordinator.settings_path)
    return settings


def renew(coordinator: CoordinatorDir, days: int | None = None) -> int:
    """A new key and certificate for the SuperLink from the same CA; returns its validity in days.

    Sites need nothing new: they trust the CA, not this certificate. A running SuperLink keeps
    the old certificate until it is launched again.
    """
    settings = coordinator.settings()
    days = days or settings.certificate_days
    issue_server_certificate(coordinator.files, server_names(settings), days)
    return days


def _check_site_name(name: str) -> None:
    """Site names become file names here and labels in every report: no paths, no spaces."""
    if not re.fullmatch(SITE_NAME_PATTERN, name):
        raise ConfigError(
            f"site name '{name}': use letters, digits, '.', '_' or '-' (at most 63, starting with a letter or digit)"
        )


def register_site(coordinator: CoordinatorDir, name: str, public_key: Path) -> tuple[RegisteredSite, bool]:
    """Store a site's validated public key as ``sites/<name>.pub``; True if it was not there yet.

    Registering the same key again is a no-op; a different key under a known name, or a known
    key under a new name, is refused: either is a mix-up that would let one site act as another.
    """
    _check_site_name(name)
    key = load_site_public_key(public_key)
    key_print = fingerprint(key)
    for site in registered_sites(coordinator):
        if site.name == name and site.fingerprint == key_print:
            return site, False
        if site.name == name:
            raise ProvisioningError(
                f"site {name} is registered with another key ({site.fingerprint}, "
                f"{site.public_key}); remove that file first to replace it"
            )
        if site.name != name and site.fingerprint == key_print:
            raise ProvisioningError(f"{public_key}: this key is already registered as site {site.name}")
    target = coordinator.files.site_public_key(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b"\n")
    return RegisteredSite(name, target, key_print), True


def registered_sites(coordinator: CoordinatorDir) -> list[RegisteredSite]:
    folder = coordinator.root / "sites"
    return (
        [
            RegisteredSite(path.stem, path, fingerprint(load_site_public_key(path)))
            for path in sorted(folder.glob("*.pub"))
        ]
        if folder.is_dir()
        else []
    )


def write_kit(coordinator: CoordinatorDir, name: str, out: Path) -> list[Path]:
    """What site ``name`` needs to join: CA certificate, a filled-in site.toml, instructions.

    Only public material goes in: the kit travels by ordinary means (mail, a USB stick).
    """
    _check_site_name(name)
    settings = coordinator.settings()
    ca = load_certificate(coordinator.files.ca_cert, "consortium CA certificate")
    if out.exists() and any(out.iterdir()):
        raise ProvisioningError(f"{out}: exists and is not empty; choose a new folder for the kit")
    out.mkdir(parents=True, exist_ok=True)
    (out / "ca.pem").write_bytes(coordinator.files.ca_cert.read_bytes())
    site_toml = out / "site.toml"
    site_toml.write_text(
        _fill_template(SITE_TEMPLATE.read_text(encoding="utf-8"), {"name": name, "superlink": settings.address})
    )
    load_site_settings(site_toml)  # the kit must be valid as shipped
    readme = out / "README.md"
    readme.write_text(_kit_readme(name, settings, certificate_fingerprint(ca)))
    return [out / "ca.pem", site_toml, readme]


def _fill_template(template: str, values: dict[str, str]) -> str:
    """Set string keys in a TOML template line by line, keeping its comments for the reader."""
    for key, value in values.items():
        setting = f"{key}{{}}={{}}{json.dumps(value)}"

        def spaced(m: re.Match[str], line: str = setting) -> str:  # the key's own spacing around '='
            return line.format(m[1], m[2])

        template, found = re.subn(
            rf'^{key}(\s*)=(\s*)"[^"\n]*"',
            spaced,
            template,
            count=1,
            flags=re.MULTILINE,
        )
        if not found:
            raise ConfigError(f"{SITE_TEMPLATE}: template has no '{key} = \"...\"' line")
    return template


def _kit_readme(name: str, settings: ConsortiumSettings, ca_fingerprint: str) -> str:
    return f"""# Joining {settings.name} as site `{name}`

This kit holds only public material: `ca.pem` (the consortium's CA certificate), `site.toml`
(this site's settings, filled in) and this file. Nothing in it is secret.

1. Check the CA with the coordinator over a second channel (phone): its SHA-256 fingerprint is
   `{ca_fingerprint}`
   (`openssl x509 -in ca.pem -noout -fingerprint -sha256`).
2. On this machine, in this folder: `insite site keygen --dir keys`. Send the coordinator
   `keys/node.pub` and read them its fingerprint (`SHA256:...`, as `ssh-keygen -lf keys/node.pub`
   prints it; the same fingerprint names this key in every insite listing and in the model card
   of a model you approve); `keys/node.key` never leaves this machine.
   The coordinator registers it as `{name}` (`insite coord register-site {name} node.pub`).
3. Put the de-identified, training-ready cases in `data/` (`insite site deid`, `insite site ingest`)
   and check them: `insite site check data`.
4. Review and approve the app the coordinator will run (`insite site approve-app APP_DIR
   --cache cache`): this site executes no other code.
5. Keep the clock synchronised (NTP): the SuperNode signs its requests with a timestamp the
   coordinator accepts for about five minutes.
6. Join: `insite site join --config site.toml`. It runs in the foreground until Ctrl-C (run it
   as a service for long federations). It needs outgoing TCP to `{settings.address}` only; no
   port on this machine is opened to the network.
"""


def running_superlink(coordinator: CoordinatorDir) -> dict | None:
    """The state 'insite coord launch' left, if that SuperLink is alive and accepting connections."""
    try:
        state = json.loads(coordinator.state_path.read_text())
        os.kill(int(state["pid"]), 0)
        with socket.create_connection((LOOPBACK, int(state["control_port"])), timeout=2):
            return state
    except (OSError, ValueError, KeyError):
        return None


def require_running(coordinator: CoordinatorDir) -> dict:
    state = running_superlink(coordinator)
    if state is None:
        raise LaunchError(
            f"no SuperLink is running for {coordinator.root}; start it with "
            f"'insite coord launch --dir {coordinator.root}' (in another terminal)"
        )
    return state


def write_state(coordinator: CoordinatorDir, control_port: int, public_address: str) -> None:
    coordinator.state_path.write_text(
        json.dumps(
            {
                "pid": os.getpid(),
                "control_port": control_port,
                "public_address": public_address,
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
        )
        + "\n"
    )


def control_client(coordinator: CoordinatorDir) -> SuperLink:
    """The running SuperLink's Control API, through the ``flwr`` connection 'launch' wrote.

    Its process set stays empty and is never stopped: stopping it would kill the strays of
    ``flwr-home``, which are the launched SuperLink's own processes.
    """
    require_running(coordinator)
    return SuperLink(coordinator.root, coordinator.files, ProcessSet(coordinator.logs, {}))
