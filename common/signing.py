"""Keys that sign manifest approvals: a site's own key, created on its machine, never sent anywhere.

Two kinds are accepted, so a site signs with the key it already has where one exists:

- the site's node-authentication key from provisioning (:func:`deploy.pki.create_site_key`:
  ECDSA P-384, OpenSSH format; signatures use ECDSA with the curve's matching SHA-2);
- an Ed25519 key made here by :func:`create_key` for a site that has none.

A private key is written with mode 0600 at creation (never chmod-ed afterwards, so there is no
window in which another user could read it) and refused on load if group or others may read it.
The public half (``<name>.pub``, PEM or OpenSSH) is what the site hands to the coordinator; the
consortium's public keys are a folder of such files, one per site, named after the site.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from common.secrets import write_secret
from common.errors import ProvisioningError

log = logging.getLogger(__name__)

PUBLIC_SUFFIX = ".pub"

PrivateKey = Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PublicKey = Ed25519PublicKey | ec.EllipticCurvePublicKey

_CURVE_HASH: dict[str, type[hashes.HashAlgorithm]] = {
    "secp256r1": hashes.SHA256, "secp384r1": hashes.SHA384, "secp521r1": hashes.SHA512}


def public_key_path(private_key: Path) -> Path:
    return private_key.with_suffix(PUBLIC_SUFFIX)


def create_key(private_key: Path) -> Path:
    """Create a new Ed25519 key pair; returns the public key's path. Never overwrites a key."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    write_secret(private_key, pem)
    public = public_key_path(private_key)
    public.write_bytes(public_pem(key.public_key()))
    log.info("created signing key %s (public half %s)", private_key, public)
    return public


def public_pem(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _check_kind(key: object, path: Path) -> None:
    if isinstance(key, Ed25519PrivateKey | Ed25519PublicKey):
        return
    is_ec = isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey)
    if is_ec and key.curve.name in _CURVE_HASH:  # type: ignore[union-attr]
        return
    raise ProvisioningError(f"{path}: not an Ed25519 or ECDSA P-256/384/521 key")


def load_private_key(path: Path) -> PrivateKey:
    """Load a PEM or OpenSSH private key, refusing one that group or others may read (like ssh)."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except FileNotFoundError:
        raise ProvisioningError(f"{path}: signing key not found") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ProvisioningError(f"{path}: signing key is readable by others (mode {stat.S_IMODE(mode):o});"
                                " it must be 0600")
    try:
        if data.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----"):
            key = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as error:
        raise ProvisioningError(f"{path}: not a readable private key ({error})") from None
    _check_kind(key, path)
    return key  # type: ignore[return-value]


def load_public_key(path: Path) -> PublicKey:
    """Load a PEM (SubjectPublicKeyInfo) or OpenSSH (``ssh-ed25519``/``ecdsa-sha2-...``) public key."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ProvisioningError(f"{path}: public key not found") from None
    try:
        if data.startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(data)
        else:
            key = serialization.load_ssh_public_key(data)
    except (ValueError, TypeError) as error:
        raise ProvisioningError(f"{path}: not a readable public key ({error})") from None
    _check_kind(key, path)
    return key  # type: ignore[return-value]


def load_public_keys(folder: Path) -> dict[str, PublicKey]:
    """The consortium's public keys: ``<site>.pub`` files in one folder."""
    if not folder.is_dir():
        raise ProvisioningError(f"{folder}: consortium public-key folder not found")
    return {path.stem: load_public_key(path) for path in sorted(folder.glob(f"*{PUBLIC_SUFFIX}"))}


def fingerprint(key: PublicKey) -> str:
    """SHA-256 of the DER public key, for people comparing keys by eye."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "SHA256:" + base64.b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")


def sign(key: PrivateKey, message: bytes) -> str:
    """Base64 signature of ``message`` (Ed25519, or ECDSA with the curve's SHA-2)."""
    if isinstance(key, Ed25519PrivateKey):
        return base64.b64encode(key.sign(message)).decode()
    return base64.b64encode(key.sign(message, ec.ECDSA(_CURVE_HASH[key.curve.name]()))).decode()


def signature_valid(key: PublicKey, signature: str, message: bytes) -> bool:
    try:
        raw = base64.b64decode(signature, validate=True)
        if isinstance(key, Ed25519PublicKey):
            key.verify(raw, message)
        else:
            key.verify(raw, message, ec.ECDSA(_CURVE_HASH[key.curve.name]()))
    except (InvalidSignature, ValueError):
        return False
    return True
