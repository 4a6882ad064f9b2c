"""Consortium PKI with ``cryptography``: the CA and the coordinator's TLS certificate.

Private keys are written 0600 from the first byte (created with ``os.open(..., 0o600)``), never
chmod-ed after the fact. Site node keys are the site's own (:mod:`deploy.node_keys`); the
coordinator only ever holds their public halves.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.errors import ProvisioningError
from common.files import require_file, write_secret

CA_DAYS = 3650
SERVER_DAYS = 365
# The SuperLink behind the proxy is reached on loopback: its certificate always names these.
LOOPBACK_NAMES = ["localhost", "127.0.0.1", "::1"]


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "insite consortium"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


@dataclass(frozen=True)
class ConsortiumFiles:
    """Where a coordinator's provisioning lives: the CA, its certificate and keys, registered sites."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.root / "private" / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.root / "superlink.pem"

    @property
    def server_key(self) -> Path:
        return self.root / "private" / "superlink.key"

    def site_public_key(self, site: str) -> Path:
        return self.root / "sites" / f"{site}.pub"


def create_ca(files: ConsortiumFiles, name: str = "insite consortium CA", days: int = CA_DAYS) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA384())
    )
    write_secret(files.ca_key, _pem_key(key))
    files.ca_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _load_ca(files: ConsortiumFiles) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
        key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    except FileNotFoundError as error:
        raise ProvisioningError(
            f"{error.filename}: consortium CA file missing; run 'insite coord provision' first"
        ) from None
    except ValueError as error:
        raise ProvisioningError(f"{files.ca_cert}: not a valid CA certificate/key ({error})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ProvisioningError(f"{files.ca_key}: expected an EC private key")
    return cert, key


def issue_server_certificate(files: ConsortiumFiles, hostnames: list[str], days: int = SERVER_DAYS) -> None:
    """The SuperLink's TLS certificate; ``hostnames`` become SANs (IP literals as IP SANs)."""
    ca_cert, ca_key = _load_ca(files)
    key = ec.generate_private_key(ec.SECP384R1())
    sans: list[x509.GeneralName] = []
    for host in hostnames:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hostnames[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    if files.server_key.exists():
        files.server_key.unlink()
    write_secret(files.server_key, _pem_key(key))
    files.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def load_certificate(path: Path, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(require_file(path, what).read_bytes())
    except ValueError:
        raise ProvisioningError(f"{path}: {what} is not a PEM certificate") from None


def certificate_fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, colon-separated: what ``openssl x509 -fingerprint`` shows."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def days_left(cert: x509.Certificate) -> int:
    """Whole days until ``cert`` expires (negative once it has)."""
    return (cert.not_valid_after_utc - dt.datetime.now(dt.UTC)).days


def certificate_names(cert: x509.Certificate) -> list[str]:
    """The certificate's subject alternative names (DNS names and IP addresses) as text."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(name.value) for name in sans]
