"""The site's key file on disk: encrypted and authenticated; its plaintext never touches the disk.

One file, always replaced whole (:func:`common.files.atomic_write`, mode 0600)::

    {"check":"..","cipher":"AES-256-GCM","format":"insite-deid-key","kdf":{"n":131072,"name":"scrypt",
     "p":1,"r":8,"salt":".."},"nonce":"..","site":"site-a","version":1}      (one line)
    <AES-256-GCM ciphertext of the key document, its 16-byte tag included>

- The first line is a header anyone may read: which site, which cipher, the KDF's salt and cost.
  It is the cipher's associated data, so changing any byte of it, the site's name included, makes
  the file fail authentication.
- The 256-bit key is derived from the site's passphrase with scrypt (RFC 7914) at the header's
  cost; a new file costs N=2^17, r=8, p=1 (128 MiB, OWASP's minimum for scrypt). The
  derivation's next 16 bytes, ``check``, tell a wrong passphrase from a damaged file: a wrong
  passphrase gives another check value; the right one on a damaged file fails the tag.
- Every save reuses the derived key with a fresh random 96-bit nonce (NIST SP 800-38D allows
  2^32 random nonces per key; a site saves once per new patient). A new passphrase derives a new
  key from a new salt.

The passphrase, kept elsewhere (seed 003: "the associated encryption key will be stored locked in
safes"), is what separates a copy of this file from the pseudonymisation key.
"""

from __future__ import annotations

import hmac
import json
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from siteprep.deid.errors import CorruptKeyFile, ForeignKeyFile, KeyFileError, PlaintextKeyFile, WrongPassphrase

FORMAT, VERSION, CIPHER, KDF = "insite-deid-key", 1, "AES-256-GCM", "scrypt"
KEY_BYTES, CHECK_BYTES, SALT_BYTES, NONCE_BYTES, TAG_BYTES = 32, 16, 16, 12, 16
MAX_HEADER_BYTES = 1024  # a real header is about 300 bytes
RESTORE = "restore it from a backup ('insite site key backup' makes one)"


@dataclass(frozen=True)
class ScryptCost:
    """scrypt's cost (RFC 7914): CPU/memory cost ``n`` (a power of 2), block size ``r``, parallelism ``p``."""

    n: int
    r: int
    p: int

    def bounded(self) -> bool:
        """Within what a reader accepts: a damaged header must not make it allocate gigabytes."""
        return (
            2**14 <= self.n <= 2**20
            and self.n & (self.n - 1) == 0
            and 1 <= self.r <= 16
            and 1 <= self.p <= 4
            and 128 * self.n * self.r <= 2**30
        )


#: The cost of a new key file or a new passphrase; a reader follows the cost its header states.
NEW_KEY_COST = ScryptCost(n=2**17, r=8, p=1)


@dataclass(frozen=True)
class Passphrase:
    """A passphrase and where it came from; errors name the source, never the value."""

    value: str = field(repr=False)
    source: str

    def encoded(self) -> bytes:
        # NFC: the same passphrase typed on two systems may arrive in two Unicode forms
        return unicodedata.normalize("NFC", self.value).encode("utf-8")


@dataclass(frozen=True)
class Header:
    """What the first line of a key file states; authenticated only once the document is opened."""

    site: str
    cost: ScryptCost
    salt: bytes
    check: bytes
    nonce: bytes


class Sealer:
    """The key derived from one passphrase and salt: seals each new version of the key document."""

    def __init__(self, site: str, cost: ScryptCost, salt: bytes, derived: bytes) -> None:
        self.site, self.cost, self.salt = site, cost, salt
        self._aead = AESGCM(derived[:KEY_BYTES])
        self._check = derived[KEY_BYTES:]

    @classmethod
    def new(cls, site: str, passphrase: Passphrase) -> Sealer:
        """A new salt and key for ``site``, at :data:`NEW_KEY_COST`."""
        cost, salt = NEW_KEY_COST, os.urandom(SALT_BYTES)
        return cls(site, cost, salt, _derive(passphrase, salt, cost))

    def seal(self, document: bytes) -> bytes:
        """The key file's bytes for ``document``: header line, then ciphertext under a fresh nonce."""
        nonce = os.urandom(NONCE_BYTES)
        header = {
            "format": FORMAT,
            "version": VERSION,
            "site": self.site,
            "cipher": CIPHER,
            "kdf": {"name": KDF, "n": self.cost.n, "r": self.cost.r, "p": self.cost.p, "salt": self.salt.hex()},
            "check": self._check.hex(),
            "nonce": nonce.hex(),
        }
        line = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        return line + b"\n" + self._aead.encrypt(nonce, document, line)

    def open(self, path: Path, data: bytes) -> bytes:
        """The document sealed in ``data`` (a file this sealer's passphrase and salt made)."""
        header, line, body = read_header(path, data, self.site)
        try:
            return self._aead.decrypt(header.nonce, body, line)
        except InvalidTag:
            raise CorruptKeyFile(
                f"corrupted key file {path}: authentication failed with the right passphrase (damaged, "
                f"truncated or altered); nothing was changed: {RESTORE}"
            ) from None


def is_plaintext(data: bytes) -> bool:
    """Whether ``data`` is an unencrypted key file, as insite wrote them before this format."""
    try:
        document = json.loads(data)
    except ValueError:  # UnicodeDecodeError is one too
        return False
    return isinstance(document, dict) and "secret" in document and "patients" in document


def read_header(path: Path, data: bytes, site: str | None) -> tuple[Header, bytes, bytes]:
    """``(header, its line, the ciphertext)``; refuses a plaintext file, a damaged one, another site's.

    ``site`` None: the settings name no site, and the header's is taken as it stands.
    """
    if is_plaintext(data):
        raise PlaintextKeyFile(
            f"plaintext key file {path}: it holds every pseudonym unencrypted (an older insite wrote "
            "it); encrypt it first with 'insite site key encrypt' (same --config or --key-file)"
        )
    line, newline, body = data.partition(b"\n")
    try:
        if not data:
            raise ValueError("the file is empty")
        if not newline or len(line) > MAX_HEADER_BYTES:
            raise ValueError("no header line")
        fields = json.loads(line)
        if not isinstance(fields, dict) or fields.get("format") != FORMAT:
            raise ValueError("not an insite key file")
        kdf = fields["kdf"]
        if (fields["version"], fields["cipher"], kdf["name"]) != (VERSION, CIPHER, KDF):
            raise ValueError(f"version {fields['version']}, {fields['cipher']}, {kdf['name']}: unknown to this insite")
        header = Header(
            site=str(fields["site"]),
            cost=ScryptCost(int(kdf["n"]), int(kdf["r"]), int(kdf["p"])),
            salt=bytes.fromhex(kdf["salt"]),
            check=bytes.fromhex(fields["check"]),
            nonce=bytes.fromhex(fields["nonce"]),
        )
        if not header.cost.bounded():
            raise ValueError(f"scrypt cost {header.cost} out of bounds")
        if (len(header.salt), len(header.check), len(header.nonce)) != (SALT_BYTES, CHECK_BYTES, NONCE_BYTES):
            raise ValueError("salt, check or nonce of the wrong length")
        if len(body) < TAG_BYTES:
            raise ValueError("truncated: no ciphertext")
    except (ValueError, KeyError, TypeError) as error:  # json's errors are ValueErrors
        raise CorruptKeyFile(f"corrupted key file {path} ({error}); nothing was changed: {RESTORE}") from None
    if site is not None and header.site != site:
        raise ForeignKeyFile(
            f"key file of another site: {path} belongs to site '{header.site}', and the settings are "
            f"site '{site}'s; nothing was changed: use this site's own key file"
        )
    return header, line, body


def unseal(path: Path, data: bytes, passphrase: Passphrase, site: str | None) -> tuple[Sealer, bytes]:
    """Open the key file ``data`` (read from ``path``): its sealer for later saves, and its document."""
    header, _, _ = read_header(path, data, site)
    derived = _derive(passphrase, header.salt, header.cost)
    if not hmac.compare_digest(derived[KEY_BYTES:], header.check):
        raise WrongPassphrase(f"wrong passphrase for key file {path} (from {passphrase.source}); nothing was changed")
    sealer = Sealer(header.site, header.cost, header.salt, derived)
    return sealer, sealer.open(path, data)


def read_key_file(path: Path) -> bytes:
    """The key file's bytes, or a :class:`KeyFileError` naming it."""
    try:
        return path.read_bytes()
    except OSError as error:
        raise KeyFileError(f"key file {path} cannot be read ({error.strerror or error})") from None


def _derive(passphrase: Passphrase, salt: bytes, cost: ScryptCost) -> bytes:
    return Scrypt(salt=salt, length=KEY_BYTES + CHECK_BYTES, n=cost.n, r=cost.r, p=cost.p).derive(passphrase.encoded())
