"""Consortium PKI with ``cryptography``: a CA, the coordinator's TLS certificate, site keys.

Private keys are written 0600 from the first byte (created with ``os.open(..., 0o600)``), never
chmod-ed after the fact. Site keys are ECDSA P-384 in OpenSSH format, which is what Flower's
SuperNode authentication loads; the coordinator only ever needs a site's *public* key.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.errors import ProvisioningError
from common.secrets import write_secret

CA_DAYS = 3650
SERVER_DAYS = 365


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "insite consortium"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass(frozen=True)
class ConsortiumFiles:
    """Where a coordinator's provisioning lives (``deploy/`` layout of a workspace)."""

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
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name)).issuer_name(_name(name))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA384())
    )
    write_secret(files.ca_key, _pem_key(key))
    files.ca_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _load_ca(files: ConsortiumFiles) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
        key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    except FileNotFoundError as error:
        raise ProvisioningError(f"{error.filename}: consortium CA file missing; "
                                "run 'insite coord provision' first") from None
    except ValueError as error:
        raise ProvisioningError(f"{files.ca_cert}: not a valid CA certificate/key ({error})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ProvisioningError(f"{files.ca_key}: expected an EC private key")
    return cert, key


def issue_server_certificate(files: ConsortiumFiles, hostnames: list[str],
                             days: int = SERVER_DAYS) -> None:
    """The SuperLink's TLS certificate; ``hostnames`` become SANs (IP literals as IP SANs)."""
    ca_cert, ca_key = _load_ca(files)
    key = ec.generate_private_key(ec.SECP384R1())
    sans: list[x509.GeneralName] = []
    for host in hostnames:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hostnames[0])).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
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


def create_site_key(private_key: Path, public_key: Path) -> None:
    """A site's node-authentication key pair, created on the site; only the .pub travels."""
    key = ec.generate_private_key(ec.SECP384R1())
    write_secret(private_key, key.private_bytes(serialization.Encoding.PEM,
                                                serialization.PrivateFormat.OpenSSH,
                                                serialization.NoEncryption()))
    public_key.parent.mkdir(parents=True, exist_ok=True)
    public_key.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                         serialization.PublicFormat.OpenSSH) + b"\n")


def check_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise ProvisioningError(f"{path}: {what} not found")
    return path


# Flower's node authentication accepts ECDSA keys on these curves only (flwr.cli.supernode.register).
NODE_KEY_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)


def load_site_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    """A site's public key as ``insite site keygen`` writes it: OpenSSH, ECDSA on a NIST curve.

    Checked when the coordinator registers it, so a wrong file (a private key, an RSA or ed25519
    key) is refused with its name here rather than by Flower at launch.
    """
    try:
        key = serialization.load_ssh_public_key(check_file(path, "site public key").read_bytes())
    except (ValueError, UnsupportedAlgorithm):
        raise ProvisioningError(f"{path}: not an OpenSSH public key (expected the node.pub "
                                "written by 'insite site keygen')") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, NODE_KEY_CURVES):
        raise ProvisioningError(f"{path}: not an ECDSA key on P-256/384/521, the only keys "
                                "Flower's node authentication accepts")
    return key


def load_site_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The site's own node key, checked before the SuperNode starts with it."""
    try:
        key = serialization.load_ssh_private_key(check_file(path, "site private key").read_bytes(), None)
    except (ValueError, UnsupportedAlgorithm, TypeError):
        raise ProvisioningError(f"{path}: not an unencrypted OpenSSH private key "
                                "(create one with 'insite site keygen')") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ProvisioningError(f"{path}: Flower's node authentication needs an ECDSA key")
    return key


def key_fingerprint(key: ec.EllipticCurvePublicKey) -> str:
    """``SHA256:...`` as ``ssh-keygen -l`` prints it, so both sides can compare it by phone."""
    blob = base64.b64decode(key.public_bytes(serialization.Encoding.OpenSSH,
                                             serialization.PublicFormat.OpenSSH).split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def load_certificate(path: Path, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(check_file(path, what).read_bytes())
    except ValueError:
        raise ProvisioningError(f"{path}: {what} is not a PEM certificate") from None


def certificate_fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, colon-separated: what ``openssl x509 -fingerprint`` shows."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def days_left(cert: x509.Certificate) -> int:
    """Whole days until ``cert`` expires (negative once it has)."""
    return (cert.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)).days


def certificate_names(cert: x509.Certificate) -> list[str]:
    """The certificate's subject alternative names (DNS names and IP addresses) as text."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(name.value) for name in sans]
