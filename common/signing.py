"""Ed25519 keys for approvals: created on the machine that uses them, never sent anywhere.

A site's private key is written with mode 0600 at creation (never chmod-ed afterwards, so there is no
window in which another user could read it) and refused on load if anyone but the owner may read it.
The public half (``<name>.pub``, PEM) is what the site hands to the coordinator; the consortium's
public keys are a folder of such files, one per site, named after the site.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from common.errors import ProvisioningError

log = logging.getLogger(__name__)

PUBLIC_SUFFIX = ".pub"


def public_key_path(private_key: Path) -> Path:
    return private_key.with_suffix(PUBLIC_SUFFIX)


def create_key(private_key: Path) -> Path:
    """Create a new Ed25519 key pair; returns the public key's path. Never overwrites a key."""
    private_key.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        fd = os.open(private_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ProvisioningError(f"{private_key}: a key already exists; refusing to overwrite it") from None
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    public = public_key_path(private_key)
    public.write_bytes(public_pem(key.public_key()))
    log.info("created signing key %s (public half %s)", private_key, public)
    return public


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Load a private key, refusing one that group or others may read (like ssh does)."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except FileNotFoundError:
        raise ProvisioningError(f"{path}: signing key not found") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ProvisioningError(f"{path}: signing key is readable by others (mode {stat.S_IMODE(mode):o});"
                                " it must be 0600")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as error:
        raise ProvisioningError(f"{path}: not a readable private key ({error})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ProvisioningError(f"{path}: not an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except FileNotFoundError:
        raise ProvisioningError(f"{path}: public key not found") from None
    except ValueError as error:
        raise ProvisioningError(f"{path}: not a readable public key ({error})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ProvisioningError(f"{path}: not an Ed25519 public key")
    return key


def load_public_keys(folder: Path) -> dict[str, Ed25519PublicKey]:
    """The consortium's public keys: ``<site>.pub`` files in one folder."""
    if not folder.is_dir():
        raise ProvisioningError(f"{folder}: consortium public-key folder not found")
    return {path.stem: load_public_key(path) for path in sorted(folder.glob(f"*{PUBLIC_SUFFIX}"))}


def fingerprint(key: Ed25519PublicKey) -> str:
    """Short SHA-256 of the raw public key, for people comparing keys by eye."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")


def sign(key: Ed25519PrivateKey, message: bytes) -> str:
    """Base64 Ed25519 signature of ``message``."""
    return base64.b64encode(key.sign(message)).decode()


def signature_valid(key: Ed25519PublicKey, signature: str, message: bytes) -> bool:
    try:
        key.verify(base64.b64decode(signature, validate=True), message)
    except (InvalidSignature, ValueError):
        return False
    return True
