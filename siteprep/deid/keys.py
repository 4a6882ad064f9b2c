"""The per-site secret and honest-broker key: pseudonyms, date offsets and keyed UID replacement.

One file per site, created 0600 on the site's machine and never inside the output tree
(PS3.15 E.1: the link back to identity stays with the site; seed 001: "do not include key
files"), encrypted under the site's passphrase (:mod:`siteprep.deid.keyfile`: the plaintext
exists only in memory). Its document holds

- ``secret``: 32 random bytes; UIDs are replaced by ``2.25.<128-bit HMAC-SHA256 of the UID>``
  (PS3.5 B.2 UUID-derived form), so the same UID maps to the same replacement in every run and
  folder of this site and relationships (study/series/instance, frame of reference, references in
  sequences) survive, while another site's secret gives unrelated UIDs;
- ``patients``: per patient (found by a keyed hash of its identity), a random subject code and a
  random whole-day date offset, plus the original identity so the broker can map back.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from common.files import atomic_write
from siteprep.deid.errors import DeidError, KeyFileError
from siteprep.deid.keyfile import Passphrase, Sealer, read_header, read_key_file, unseal
from siteprep.deid.passphrase import check_new_passphrase, configured_passphrase, no_passphrase
from siteprep.deid.settings import DeidSettings

log = logging.getLogger(__name__)

FORMAT = 1
# Offsets move dates 1..10 years into the past; whole days keep weekday-free intervals exact.
MIN_OFFSET_DAYS, MAX_OFFSET_DAYS = 365, 3650


@dataclass(frozen=True)
class PatientIdentity:
    """What identifies a patient in one object, in order of preference (see :meth:`key`)."""

    patient_id: str
    issuer: str
    name: str
    birth_date: str
    study_uid: str

    def key(self) -> str:
        """PatientID within its issuer; else name + birth date; else the study (one anonymous patient)."""
        if self.patient_id:
            return f"id\x00{self.issuer}\x00{self.patient_id}"
        if self.name:
            return f"name\x00{self.name}\x00{self.birth_date}"
        return f"study\x00{self.study_uid}"


@dataclass(frozen=True)
class Pseudonym:
    subject: str
    date_offset_days: int


class SiteKey:
    """Open or make the site's key file; new patients are written to it as they are first seen."""

    def __init__(
        self,
        path: Path,
        prefix: str,
        persist: bool = True,
        *,
        passphrase: Passphrase | None = None,
        site: str | None = None,
    ) -> None:
        """``persist=False`` (a dry run, a scan) never creates or changes the file.

        An existing file is opened with ``passphrase`` and must be ``site``'s (None: whichever
        site its header names). A missing one is made for ``site`` under ``passphrase``, unless
        ``persist`` is off: then the key lives in memory only.

        A persisting key holds an exclusive lock (``<key>.lock``) until :meth:`close`, so two runs
        cannot both add patients and lose one another's entries.
        """
        self.path: Path | None = path  # None only in a BorrowedKey, which never opens a key file
        self.prefix = prefix
        self.persist = persist
        self._lock: int | None = lock_key_file(path) if persist else None
        self._sealer: Sealer | None = None  # None: nothing is saved (a dry run's new key, a BorrowedKey)
        try:
            if path.exists():
                self._load(passphrase, site)
            else:
                self._secret = secrets.token_bytes(32)
                self._patients: dict[str, dict] = {}
                if persist:
                    self._sealer = _new_sealer(path, passphrase, site)
                    self._save()
        except BaseException:
            self.close()
            raise
        self._subjects = {entry["subject"] for entry in self._patients.values()}

    def close(self) -> None:
        """Release the lock; the key stays usable for look-ups but must not add patients."""
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor releases the flock
            self._lock = None
            self.persist = False

    def _load(self, passphrase: Passphrase | None, site: str | None) -> None:
        assert self.path is not None  # only SiteKey.__init__ loads, with its file
        refuse_shared_key_file(self.path)
        data = read_key_file(self.path)
        if passphrase is None:
            read_header(self.path, data, site)  # a plaintext or foreign file is named as such first
            raise no_passphrase(self.path)
        self._sealer, document = unseal(self.path, data, passphrase, site)
        self._secret, self._patients = parse_document(self.path, document)

    def _save(self) -> None:
        """Atomically rewrite the file, created 0600 before any secret is written to it.

        Called at creation and for every new patient, so output is never written with a subject
        code or secret the file does not hold. Only ciphertext reaches the disk.
        """
        if not self.persist or self._sealer is None:
            return
        assert self.path is not None  # a BorrowedKey never persists
        atomic_write(self.path, self._sealer.seal(render_document(self._secret, self._patients)), mode=0o600)

    def patients(self) -> dict[str, dict]:
        """Every known patient by subject code: ``date_offset_days`` and the ``original`` identity."""
        return {
            entry["subject"]: {key: value for key, value in entry.items() if key != "subject"}
            for entry in self._patients.values()
        }

    def _mac(self, purpose: bytes, value: str) -> bytes:
        return hmac.new(self._secret, purpose + b"\x00" + value.encode("utf-8"), hashlib.sha256).digest()

    def uid(self, original: str) -> str:
        """The replacement of a UID: stable for this site, unrelated to the original."""
        return f"2.25.{int.from_bytes(self._mac(b'uid', original)[:16], 'big')}"

    def pseudonym(self, identity: PatientIdentity, avoid_offsets: frozenset[int] = frozenset()) -> Pseudonym:
        """The patient's subject code and date offset, created at random on first sight.

        ``avoid_offsets`` are day differences between dates of the object that introduces the
        patient: an offset equal to one would shift one original date onto another, so a shifted
        value would read like an original date (harmless, but a residual scan rightly flags it).
        """
        handle = self._mac(b"patient", identity.key()).hex()
        entry = self._patients.get(handle)
        if entry is None:
            entry = self._new_patient(handle, identity, avoid_offsets)
        return Pseudonym(entry["subject"], int(entry["date_offset_days"]))

    def _new_patient(self, handle: str, identity: PatientIdentity, avoid_offsets: frozenset[int]) -> dict:
        entry = {
            "subject": self._new_subject(),
            "date_offset_days": self._new_offset(avoid_offsets),
            "original": {
                "PatientID": identity.patient_id,
                "IssuerOfPatientID": identity.issuer,
                "PatientName": identity.name,
                "PatientBirthDate": identity.birth_date,
                "StudyInstanceUID": "" if identity.patient_id or identity.name else identity.study_uid,
            },
        }
        self._patients[handle] = entry
        self._save()
        log.debug("new subject %s", entry["subject"])
        return entry

    def lend(self) -> KeyLoan:
        """What a worker process needs to act for this key (see :class:`BorrowedKey`)."""
        return KeyLoan(
            self.prefix,
            self._secret,
            {
                handle: {"subject": entry["subject"], "date_offset_days": entry["date_offset_days"]}
                for handle, entry in self._patients.items()
            },
        )

    @staticmethod
    def _new_offset(avoid: frozenset[int]) -> int:
        while True:
            offset = -(MIN_OFFSET_DAYS + secrets.randbelow(MAX_OFFSET_DAYS - MIN_OFFSET_DAYS + 1))
            if offset not in avoid:
                return offset

    def _new_subject(self) -> str:
        while True:
            code = f"{self.prefix}-{base64.b32encode(secrets.token_bytes(5)).decode()}"
            if code not in self._subjects:
                self._subjects.add(code)
                return code


@dataclass(frozen=True)
class KeyLoan:
    """The secret and the known patients' pseudonyms (not their identities), for a worker."""

    prefix: str
    secret: bytes
    patients: dict[str, dict]


class BorrowedKey(SiteKey):
    """A site key inside a worker process of a run whose own key stays with the run.

    UIDs come from the same secret; a patient the loan does not know is asked of the run's key
    (``ask``), which alone creates patients, under its lock, and saves each to the key file before
    answering, so no worker writes a subject code the key file does not hold and every worker
    gets the same pseudonym for a patient. A borrowed key never touches the key file.
    """

    def __init__(self, loan: KeyLoan, ask: Callable[[PatientIdentity, frozenset[int]], Pseudonym]) -> None:
        # not SiteKey.__init__: no file, no lock, nothing to seal with
        self.path, self.prefix, self.persist, self._lock, self._sealer = None, loan.prefix, False, None, None
        self._secret = loan.secret
        self._patients = dict(loan.patients)
        self._ask = ask

    def _new_patient(self, handle: str, identity: PatientIdentity, avoid_offsets: frozenset[int]) -> dict:
        pseudonym = self._ask(identity, avoid_offsets)
        entry = {"subject": pseudonym.subject, "date_offset_days": pseudonym.date_offset_days}
        self._patients[handle] = entry
        return entry


def open_site_key(settings: DeidSettings, persist: bool = True, passphrase: Passphrase | None = None) -> SiteKey:
    """The key ``settings`` name, for their site; without ``passphrase``, one from the configured
    sources (:func:`siteprep.deid.passphrase.configured_passphrase`)."""
    if settings.key_file is None:
        raise DeidError("the de-identification settings name no key file (key_file, or --key-file)")
    return SiteKey(
        settings.key_file,
        settings.subject_prefix,
        persist,
        passphrase=passphrase or configured_passphrase(settings),
        site=settings.site,
    )


def render_document(secret: bytes, patients: dict[str, dict]) -> bytes:
    """The key document, the plaintext that is sealed: only ever in memory."""
    return json.dumps({"format": FORMAT, "secret": secret.hex(), "patients": patients}, sort_keys=True).encode()


def parse_document(path: Path, document: bytes) -> tuple[bytes, dict[str, dict]]:
    """``(secret, patients)`` of a key document; a :class:`KeyFileError` names a malformed one."""
    try:
        fields = json.loads(document)
        if fields["format"] != FORMAT:
            raise ValueError(f"format {fields['format']}, expected {FORMAT}")
        secret, patients = bytes.fromhex(fields["secret"]), dict(fields["patients"])
        if len(secret) != 32:
            raise ValueError("a secret of the wrong length")
        return secret, patients
    except (ValueError, KeyError, TypeError) as error:
        raise KeyFileError(f"key file {path} holds a malformed key ({error})") from None


def refuse_shared_key_file(path: Path) -> None:
    """A key file others can read is refused: its mode says something else went wrong."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError as error:
        raise KeyFileError(f"key file {path} cannot be read ({error.strerror or error})") from None
    if mode & 0o077:
        raise KeyFileError(f"key file {path} is readable by others (mode {mode:o}); chmod 600 it")


def lock_key_file(path: Path) -> int:
    """An exclusive lock on ``<key>.lock``, as the descriptor whose closing releases it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DeidError(f"key file {path} is in use by another de-identification run") from None
    return fd


@contextmanager
def key_file_locked(path: Path) -> Iterator[None]:
    """Hold the key file's lock (:func:`lock_key_file`) while a key command rewrites it."""
    fd = lock_key_file(path)
    try:
        yield
    finally:
        os.close(fd)


def site_for_new_key(path: Path, site: str | None) -> str:
    """The site a new key file ``path`` is made for; the settings must name one."""
    if site is None:
        raise KeyFileError(
            f"key file {path} does not exist, and the settings name no site to make it for: "
            "'insite site init --site NAME' makes the site's settings and key"
        )
    return site


def _new_sealer(path: Path, passphrase: Passphrase | None, site: str | None) -> Sealer:
    site = site_for_new_key(path, site)
    if passphrase is None:
        raise no_passphrase(path)
    return Sealer.new(site, check_new_passphrase(passphrase))
