"""A loop on a daemon thread for the length of a ``with`` block: stopped and joined when it ends."""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType


class Background:
    """Runs ``loop(stop)`` on a daemon thread; ``loop`` returns soon after ``stop`` is set."""

    def __init__(self, name: str, loop: Callable[[threading.Event], None]) -> None:
        self.stop = threading.Event()
        self._thread = threading.Thread(target=loop, args=(self.stop,), name=name, daemon=True)

    def __enter__(self) -> Background:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop.set()
        self._thread.join()
