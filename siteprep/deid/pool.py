"""De-identification in worker processes, with the run's key and bookkeeping in the parent.

Workers run :class:`~siteprep.deid.job.FileJob` on one file at a time. The parent

- hands a worker its next few files (CHUNK) when the worker returns its results: one message
  per file woke both processes so often that a loaded machine lost more than the second CPU won;
- answers a worker's question about a patient its :class:`~siteprep.deid.keys.BorrowedKey` does
  not know with the run's own key, which alone creates patients (under its lock, saving each to
  the key file before answering), so every worker uses the same pseudonym for a patient;
- commits results in input order, so a run's outcome (which of two files of one SOP instance is
  placed last, the report, the quarantine) is a sequential run's.

A worker that dies ends the run with :class:`~siteprep.deid.errors.DeidError`: nothing it had in
hand was committed, and its staged file goes with the staging folder. Workers are forked where
the platform can: a spawned worker imports pydicom and numpy again, which costs as much as a
few hundred files.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import cast

from siteprep.deid.errors import DeidError
from siteprep.deid.job import FileJob, Prepared
from siteprep.deid.keys import BorrowedKey, KeyLoan, PatientIdentity, Pseudonym, SiteKey
from siteprep.deid.settings import DeidSettings

MIN_FILES_PER_WORKER = 64  # below this a worker's start and the messages outweigh the gain
CHUNK = 8  # files per message; small enough that workers finish together


@dataclass(frozen=True)
class JobSpec:
    """What a :class:`FileJob` needs besides the key (picklable: it is sent to workers)."""

    settings: DeidSettings
    destination: Path
    staging: Path
    dry_run: bool

    def job(self, key: SiteKey) -> FileJob:
        return FileJob(self.settings, self.destination, self.staging, self.dry_run, key)


def worker_count(requested: int | None, files: int) -> int:
    """``requested``, else one per usable CPU with at least MIN_FILES_PER_WORKER files each."""
    if requested is not None:
        return requested
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cpus, files // MIN_FILES_PER_WORKER))


def run_in_workers(
    files: list[Path], workers: int, spec: JobSpec, key: SiteKey, commit: Callable[[Path, Prepared], None]
) -> None:
    """Run every file's job in ``workers`` processes; ``commit`` each result in input order."""
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    processes: dict[Connection, multiprocessing.process.BaseProcess] = {}
    try:
        for _ in range(min(workers, len(files))):
            ours, theirs = context.Pipe()
            process = context.Process(target=_work, args=(theirs, spec, key.lend()), daemon=True)
            process.start()
            theirs.close()
            processes[ours] = process
        _schedule(files, list(processes), key, commit)
    finally:
        for connection, worker in processes.items():
            connection.close()  # a worker still waiting for a file ends on this
            worker.join(timeout=5)
            if worker.is_alive():
                worker.kill()
                worker.join()


def _schedule(
    files: list[Path], connections: list[Connection], key: SiteKey, commit: Callable[[Path, Prepared], None]
) -> None:
    chunks = _chunks(list(enumerate(files)))
    in_hand: dict[Connection, list[int]] = {}
    done: dict[int, Prepared] = {}
    committed = 0
    for connection in connections:
        _hand_out(connection, chunks, in_hand)
    while in_hand:
        # cast: wait returns some of the very objects it is given (typeshed: any waitable)
        for connection in cast(list[Connection], wait(list(in_hand))):
            try:
                message = connection.recv()
            except EOFError:
                held = ", ".join(str(files[index]) for index in in_hand[connection])
                raise DeidError(f"a de-identification worker died on one of {held}") from None
            if message[0] == "ask":
                connection.send(key.pseudonym(*message[1:]))
                continue
            done.update(zip(in_hand.pop(connection), message[1], strict=True))
            _hand_out(connection, chunks, in_hand)
            while committed in done:
                commit(files[committed], done.pop(committed))
                committed += 1


def _chunks(tasks: list[tuple[int, Path]]) -> Iterator[list[tuple[int, Path]]]:
    return (tasks[start : start + CHUNK] for start in range(0, len(tasks), CHUNK))


def _hand_out(
    connection: Connection, chunks: Iterator[list[tuple[int, Path]]], in_hand: dict[Connection, list[int]]
) -> None:
    chunk = next(chunks, None)
    connection.send(chunk)  # None: no files left, the worker ends
    if chunk is not None:
        in_hand[connection] = [index for index, _ in chunk]


def _work(connection: Connection, spec: JobSpec, loan: KeyLoan) -> None:
    """A worker: jobs until told there are none left; unknown patients are asked of the parent."""

    def ask(identity: PatientIdentity, avoid_offsets: frozenset[int]) -> Pseudonym:
        connection.send(("ask", identity, avoid_offsets))
        return connection.recv()

    job = spec.job(BorrowedKey(loan, ask))
    try:
        while (chunk := connection.recv()) is not None:
            connection.send(("done", [job.run(index, path) for index, path in chunk]))
    except (EOFError, BrokenPipeError):  # the parent ended the run (another worker died)
        return
