"""A site's node key: made on the site (``insite site keygen``), its public half registered by the coordinator.

ECDSA P-384 in OpenSSH format, which is what Flower's SuperNode authentication loads. The private
key is written 0600 from its first byte and never leaves the site; the coordinator only ever
holds the public half. The same key signs the site's approval of a shared-assets manifest.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from common.errors import ProvisioningError
from common.files import require_file, write_secret

# Flower's node authentication accepts ECDSA keys on these curves only (flwr.cli.supernode.register).
NODE_KEY_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)


def create_site_key(private_key: Path, public_key: Path) -> None:
    """A site's node-authentication key pair, created on the site; only the .pub travels."""
    key = ec.generate_private_key(ec.SECP384R1())
    write_secret(
        private_key,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        ),
    )
    public_key.parent.mkdir(parents=True, exist_ok=True)
    public_key.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b"\n"
    )


def load_site_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    """A site's public key as ``insite site keygen`` writes it: OpenSSH, ECDSA on a NIST curve.

    Checked when the coordinator registers it, so a wrong file (a private key, an RSA or ed25519
    key) is refused with its name here rather than by Flower at launch.
    """
    try:
        key = serialization.load_ssh_public_key(require_file(path, "site public key").read_bytes())
    except (ValueError, UnsupportedAlgorithm):
        raise ProvisioningError(
            f"{path}: not an OpenSSH public key (expected the node.pub written by 'insite site keygen')"
        ) from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, NODE_KEY_CURVES):
        raise ProvisioningError(
            f"{path}: not an ECDSA key on P-256/384/521, the only keys Flower's node authentication accepts"
        )
    return key


def load_site_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The site's own node key, checked before the SuperNode starts with it."""
    try:
        key = serialization.load_ssh_private_key(require_file(path, "site private key").read_bytes(), None)
    except (ValueError, UnsupportedAlgorithm, TypeError):
        raise ProvisioningError(
            f"{path}: not an unencrypted OpenSSH private key (create one with 'insite site keygen')"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ProvisioningError(f"{path}: Flower's node authentication needs an ECDSA key")
    return key
