"""Public keys as people compare them: loading a site's key files and its one fingerprint.

A site has one key pair it made on its own machine (``insite site keygen``): the coordinator
registers its public half for Flower's node authentication, and the site signs its approval of a
shared-assets manifest with it. Every place that shows a key (keygen, register-site, sites, the
kit's instructions, approvals, the model card, verify) shows :func:`fingerprint`, which is what
``ssh-keygen -lf node.pub`` prints, so a site can match them by eye or over the phone.

Ed25519 and ECDSA on the NIST curves are accepted; private key files must be 0600, like ssh's.
"""

from __future__ import annotations

import base64
import stat
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from common.errors import ProvisioningError

PrivateKey = Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PublicKey = Ed25519PublicKey | ec.EllipticCurvePublicKey

#: ECDSA curves accepted, with the SHA-2 that signs on each (as OpenSSH pairs them).
CURVE_HASH: dict[str, type[hashes.HashAlgorithm]] = {
    "secp256r1": hashes.SHA256,
    "secp384r1": hashes.SHA384,
    "secp521r1": hashes.SHA512,
}


def fingerprint(key: PublicKey) -> str:
    """``SHA256:...`` of the key's OpenSSH wire form: exactly what ``ssh-keygen -l`` prints."""
    digest = serialization.ssh_key_fingerprint(key, hashes.SHA256())
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _check_kind(key: object, path: Path) -> None:
    if isinstance(key, Ed25519PrivateKey | Ed25519PublicKey):
        return
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) and key.curve.name in CURVE_HASH:
        return
    raise ProvisioningError(f"{path}: not an Ed25519 or ECDSA P-256/384/521 key")


def load_private_key(path: Path) -> PrivateKey:
    """Load a PEM or OpenSSH private key, refusing one that group or others may read (like ssh)."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except FileNotFoundError:
        raise ProvisioningError(f"{path}: private key not found") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ProvisioningError(
            f"{path}: private key is readable by others (mode {stat.S_IMODE(mode):o}); it must be 0600"
        )
    key: PrivateKeyTypes
    try:
        if data.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----"):
            key = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as error:
        raise ProvisioningError(f"{path}: not a readable private key ({error})") from None
    _check_kind(key, path)
    assert isinstance(key, Ed25519PrivateKey | ec.EllipticCurvePrivateKey)  # _check_kind let no other kind through
    return key


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
    assert isinstance(key, Ed25519PublicKey | ec.EllipticCurvePublicKey)  # _check_kind let no other kind through
    return key
