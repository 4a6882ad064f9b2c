"""What the coordinator is doing right now, for people and for the run supervisor.

The ServerApp writes ``state.json`` in the run folder whenever it moves on (waiting for quorum,
round N at stage S, paused and why, finished) and refreshes its ``updated`` time every few
seconds from a background thread, so ``insite coord status`` shows the run's state as the
coordinator knows it, and the run supervisor can tell a live ServerApp from a dead one.
"""

from __future__ import annotations

import os
import threading
import time
from types import TracebackType
from typing import Any

from common.background import Background
from common.run_record import RunRecord

BEAT_S = 2.0


class LiveState:
    """The run's current phase and details; ``with LiveState(...)`` keeps it fresh."""

    def __init__(self, record: RunRecord, flower_run: int = 0, beat_s: float = BEAT_S) -> None:
        self.record = record
        self.flower_run = flower_run
        self.beat_s = beat_s
        self._lock = threading.Lock()
        self._state: dict[str, Any] = {}
        self._background = Background("live-state", self._beat)

    def set(self, phase: str, **details: Any) -> None:
        """Enter ``phase`` (starting, waiting, round, evaluating, paused, completed, failed)."""
        with self._lock:
            moved = any(details.get(key) != self._state.get(key) for key in ("round", "stage"))
            if phase != self._state.get("phase") or moved:  # "since" is when this round's stage began
                since = time.time()
            else:
                since = self._state.get("since", time.time())
            self._state = {"phase": phase, "since": since, "pid": os.getpid(), "flower_run": self.flower_run, **details}
            self._write()

    def _write(self) -> None:
        self.record.write_state({**self._state, "updated": time.time()})

    def _beat(self, stop: threading.Event) -> None:
        while not stop.wait(self.beat_s):
            with self._lock:
                if self._state:
                    self._write()

    def __enter__(self) -> LiveState:
        self._background.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._background.__exit__(kind, error, trace)
