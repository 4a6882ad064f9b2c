"""The site's egress ledger: a hash-chained, append-only record of every reply that left the site.

Each line of ``<cache>/egress-ledger.jsonl`` is one JSON entry: sequence number, UTC time, run,
round, kind, payload size and SHA-256, a plain-words description, the previous entry's hash and
the entry's own hash (SHA-256 of the entry without it). Editing an entry breaks its hash,
deleting or reordering one breaks the chain, and ``egress-ledger.head`` (rewritten after every
append) holds the last sequence number and hash, so cutting entries off the end shows too.

Several ClientApp processes of one site may reply at once; appends hold an exclusive lock on the
ledger file so the chain stays linear. The ledger only records: the egress guard
(:mod:`client.egress`) decides what may leave.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from common.files import atomic_write

LEDGER_FILE = "egress-ledger.jsonl"
HEAD_FILE = "egress-ledger.head"
GENESIS = "0" * 64


def entry_hash(entry: dict[str, Any]) -> str:
    """SHA-256 over the entry's canonical JSON, its own ``hash`` field left out."""
    body = {key: value for key, value in entry.items() if key != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass
class LedgerCheck:
    """What ``insite site ledger verify`` reports: entries read and every inconsistency found."""

    entries: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems


class Ledger:
    """One site's ledger under its cache folder."""

    def __init__(self, cache: Path) -> None:
        self.path = cache / LEDGER_FILE
        self.head_path = cache / HEAD_FILE

    @contextmanager
    def _locked(self) -> Iterator[IO[str]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(descriptor, "r+", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield handle
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def append(self, *, run: int, round_number: int | None, kind: str, payload: bytes, detail: str) -> dict[str, Any]:
        """Chain one outgoing message onto the ledger; returns the entry written."""
        with self._locked() as handle:
            last = _last_line(handle)
            previous = json.loads(last) if last else None
            entry: dict[str, Any] = {
                "seq": previous["seq"] + 1 if previous else 1,
                "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "run": run,
                "round": round_number,
                "kind": kind,
                "bytes": len(payload),
                "sha256": hashlib.sha256(payload).hexdigest(),
                "detail": detail,
                "prev": previous["hash"] if previous else GENESIS,
            }
            entry["hash"] = entry_hash(entry)
            handle.write(json.dumps(entry, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
            self._write_head(entry)
        return entry

    def _write_head(self, entry: dict[str, Any]) -> None:
        atomic_write(self.head_path, json.dumps({"seq": entry["seq"], "hash": entry["hash"]}).encode(), mode=0o600)

    def entries(self) -> list[dict[str, Any]]:
        """Every entry in file order; a line that is not JSON is returned as ``{"unreadable": line}``."""
        if not self.path.exists():
            return []
        entries = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                entries.append({"unreadable": line})
        return entries

    def verify(self) -> LedgerCheck:
        """Recompute every hash and link; compare the last entry with the head file."""
        check = LedgerCheck()
        previous_hash, expected_seq = GENESIS, 1
        for position, entry in enumerate(self.entries(), start=1):
            check.entries += 1
            if "unreadable" in entry:
                check.problems.append(f"line {position}: not a ledger entry (edited by hand?)")
                continue
            seq = entry.get("seq")
            if entry.get("hash") != entry_hash(entry):
                check.problems.append(
                    f"entry {seq} (line {position}): content does not match its hash: the entry was edited"
                )
            if entry.get("prev") != previous_hash:
                check.problems.append(
                    f"entry {seq} (line {position}): does not follow the entry "
                    "before it: an entry was deleted, inserted or moved"
                )
            if seq != expected_seq:
                check.problems.append(
                    f"line {position}: sequence number {seq}, expected "
                    f"{expected_seq}: entries are missing or out of order"
                )
            previous_hash = str(entry.get("hash"))
            expected_seq = (seq if isinstance(seq, int) else expected_seq) + 1
        self._check_head(check, previous_hash, expected_seq - 1)
        return check

    def _check_head(self, check: LedgerCheck, last_hash: str, last_seq: int) -> None:
        if not self.head_path.exists():
            if check.entries:
                check.problems.append(f"{self.head_path.name} is missing: the ledger's end cannot be confirmed")
            return
        try:
            head = json.loads(self.head_path.read_text())
        except json.JSONDecodeError:
            check.problems.append(f"{self.head_path.name} is not valid JSON")
            return
        if head.get("hash") != last_hash:
            check.problems.append(
                f"the ledger ends at entry {last_seq} but the last entry written was "
                f"{head.get('seq')}: entries were removed from the end or the file was replaced"
            )


def _last_line(handle: IO[str]) -> str:
    """The file's last non-empty line (read from the start: ledgers stay small, a line per message)."""
    handle.seek(0)
    last = ""
    for line in handle:
        if line.strip():
            last = line
    return last.strip()
