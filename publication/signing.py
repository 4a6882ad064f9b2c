"""Signatures on manifest approvals, with a site's own key, created on its machine, never sent anywhere.

Two kinds of key are accepted, so a site signs with the key it already has where one exists:

- the site's node-authentication key from provisioning (:func:`deploy.node_keys.create_site_key`:
  ECDSA P-384, OpenSSH format; signatures use ECDSA with the curve's matching SHA-2);
- an Ed25519 key made here by :func:`create_key` for a site that has none.

A private key is written with mode 0600 at creation (never chmod-ed afterwards, so there is no
window in which another user could read it) and refused on load if group or others may read it.
The public half (``<name>.pub``, PEM or OpenSSH) is what the site hands to the coordinator; the
consortium's public keys are a folder of such files, one per site, named after the site.
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from common.errors import ProvisioningError
from common.files import write_secret
from common.keys import CURVE_HASH, PrivateKey, PublicKey, load_public_key

log = logging.getLogger(__name__)

PUBLIC_SUFFIX = ".pub"


def public_key_path(private_key: Path) -> Path:
    return private_key.with_suffix(PUBLIC_SUFFIX)


def create_key(private_key: Path) -> Path:
    """Create a new Ed25519 key pair; returns the public key's path. Never overwrites a key."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    write_secret(private_key, pem)
    public = public_key_path(private_key)
    public.write_bytes(public_pem(key.public_key()))
    log.info("created signing key %s (public half %s)", private_key, public)
    return public


def public_pem(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public_keys(folder: Path) -> dict[str, PublicKey]:
    """The consortium's public keys: ``<site>.pub`` files in one folder."""
    if not folder.is_dir():
        raise ProvisioningError(f"{folder}: consortium public-key folder not found")
    return {path.stem: load_public_key(path) for path in sorted(folder.glob(f"*{PUBLIC_SUFFIX}"))}


def sign(key: PrivateKey, message: bytes) -> str:
    """Base64 signature of ``message`` (Ed25519, or ECDSA with the curve's SHA-2)."""
    if isinstance(key, Ed25519PrivateKey):
        return base64.b64encode(key.sign(message)).decode()
    return base64.b64encode(key.sign(message, ec.ECDSA(CURVE_HASH[key.curve.name]()))).decode()


def signature_valid(key: PublicKey, signature: str, message: bytes) -> bool:
    try:
        raw = base64.b64decode(signature, validate=True)
        if isinstance(key, Ed25519PublicKey):
            key.verify(raw, message)
        else:
            key.verify(raw, message, ec.ECDSA(CURVE_HASH[key.curve.name]()))
    except (InvalidSignature, ValueError):
        return False
    return True
