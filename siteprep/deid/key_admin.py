"""Looking after the site's key file: migration to encryption, a new passphrase, backups, and the
honest broker's look-up of a pseudonym.

Each works on the file under its lock where it rewrites it (a de-identification run holds the same
lock), writes only ciphertext (:func:`common.files.atomic_write`: the old file or the new one,
never a mix), and leaves the file as it was when anything is refused.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pwd
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common.files import atomic_write
from siteprep.deid.errors import DeidError, KeyFileError
from siteprep.deid.keyfile import Passphrase, Sealer, is_plaintext, read_header, read_key_file, unseal
from siteprep.deid.keys import key_file_locked, parse_document, refuse_shared_key_file, render_document
from siteprep.deid.passphrase import check_new_passphrase


@dataclass(frozen=True)
class KeySummary:
    """What a key command reports: whose key it is and how many patients it maps."""

    path: Path
    site: str
    patients: int


def check_plaintext_key(path: Path) -> None:
    """Refuse anything but a plaintext key file (an encrypted one, a damaged one) before any work."""
    data = read_key_file(path)
    if not is_plaintext(data):
        read_header(path, data, None)  # a damaged file is named as such
        raise KeyFileError(f"key file {path} is encrypted already; nothing was changed")


def encrypt_plaintext_key(path: Path, site: str, passphrase: Passphrase) -> KeySummary:
    """Replace the plaintext key file ``path`` by the same key encrypted for ``site``.

    The encrypted file replaces the plaintext one in one rename; then the plaintext's own blocks
    are overwritten with zeros through a descriptor opened before the rename (hard links to it
    included). Copies made earlier (backups, snapshots) and what a file system or SSD keeps of
    old blocks are out of reach: delete those copies.
    """
    check_new_passphrase(passphrase)
    with key_file_locked(path):
        check_plaintext_key(path)
        data = read_key_file(path)
        secret, patients = parse_document(path, data)
        sealer = Sealer.new(site, passphrase)
        sealed = sealer.seal(render_document(secret, patients))
        if parse_document(path, sealer.open(path, sealed)) != (secret, patients):
            raise KeyFileError(f"key file {path}: the encrypted key did not read back; nothing was changed")
        with open(path, "r+b") as plaintext:  # the old inode, kept open across the rename
            atomic_write(path, sealed, mode=0o600)
            plaintext.write(bytes(len(data)))
            plaintext.flush()
            os.fsync(plaintext.fileno())
            plaintext.truncate(0)
    return KeySummary(path, site, len(patients))


def rotate_passphrase(path: Path, site: str | None, current: Passphrase, new: Callable[[], Passphrase]) -> KeySummary:
    """Re-encrypt the key file under a new passphrase (a new salt, so a new key).

    ``new`` is asked for the new passphrase once ``current`` has opened the file.
    """
    with key_file_locked(path):
        refuse_shared_key_file(path)
        sealer, document = unseal(path, read_key_file(path), current, site)
        _, patients = parse_document(path, document)
        renewed = Sealer.new(sealer.site, check_new_passphrase(new()))
        atomic_write(path, renewed.seal(document), mode=0o600)
    return KeySummary(path, sealer.site, len(patients))


def backup_key(path: Path, site: str | None, passphrase: Passphrase, destination: Path) -> KeySummary:
    """Copy the key file, still encrypted under the same passphrase, to a new file ``destination``.

    The passphrase is asked so that only a key that opens is backed up: a copy of a damaged file,
    or of one whose passphrase nobody knows, restores nothing.
    """
    refuse_shared_key_file(path)
    data = read_key_file(path)
    sealer, document = unseal(path, data, passphrase, site)
    _, patients = parse_document(path, document)
    if destination.exists() or destination.resolve() == path.resolve():
        raise KeyFileError(f"backup {destination} exists already; name a new file")
    atomic_write(destination, data, mode=0o600)
    if read_key_file(destination) != data:
        raise KeyFileError(f"backup {destination} does not read back as written; check that disk")
    return KeySummary(destination, sealer.site, len(patients))


def lookup_log(path: Path) -> Path:
    """The append-only record of re-identifications, beside the key file."""
    return path.with_name(path.name + ".lookups.log")


def reidentify(path: Path, site: str | None, passphrase: Passphrase, pseudonym: str, reason: str = "") -> dict:
    """The original identity behind ``pseudonym`` (``PatientID``, ``PatientName``...).

    Every look-up, found or not, is appended to :func:`lookup_log` before anything is answered:
    when, by which account on which host, which pseudonym, and the stated reason; never the
    identity found.
    """
    refuse_shared_key_file(path)
    _, document = unseal(path, read_key_file(path), passphrase, site)
    _, patients = parse_document(path, document)
    found = next((entry["original"] for entry in patients.values() if entry["subject"] == pseudonym), None)
    _log_lookup(lookup_log(path), pseudonym, found is not None, reason)
    if found is None:
        raise DeidError(f"no patient has the pseudonym {pseudonym!r} in key file {path} (the look-up is logged)")
    return dict(found)


def _log_lookup(log: Path, pseudonym: str, found: bool, reason: str) -> None:
    record = {
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "user": pwd.getpwuid(os.getuid()).pw_name,  # the account, not $USER, which anyone can set
        "sudo_user": os.environ.get("SUDO_USER", ""),
        "host": socket.gethostname(),
        "pseudonym": pseudonym,
        "found": found,
        "reason": reason,
    }
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    try:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)  # one write on an O_APPEND file: a whole line, after every other
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as error:
        raise KeyFileError(f"look-up log {log} cannot be written ({error.strerror}); nothing was looked up") from None
