"""Held polls: a Flower endpoint that is polled answers "nothing yet" only after waiting, bounded, for news.

Why. Every hop of an exchange polls in Flower: a site's SuperNode asks the SuperLink for a
message (Fleet ``pull-messages``), the site's SuperExec asks its SuperNode for a task to start
(``acquire-task``), the ServerApp asks the SuperLink for the sites' replies (the runtime API's
``pull-messages``), and each receiver asks for a message's objects (``pull-object``), which Flower
lists before they are uploaded. Each answers "nothing yet" at once, so what arrives waits for the
asker's next poll (per exchange: the SuperNode's 0.5 s idle poll, SuperExec's 0.2 s, the
coordinator's 0.1 s, and each object's retry), and while a round trains every asker keeps sending
requests that the SuperLink serves on the same two cores as the training (issue 14,
docs/benchmarks/round_floor.md).

What. In the process that serves the endpoint, its handler (Flower looks it up on its module at
every request, so it can be replaced there) is wrapped by :func:`held`: an empty answer is held
until the state that would fill it announces a change (:func:`announcing`, around the state's own
store method) or ``hold_s`` passes, then asked once more. News reaches the asker as it is
stored, and an idle asker sends about one request per ``hold_s`` instead of several a second.
The askers pace themselves by the start of their last request, not its end
(deploy/site/supernode_launcher.py, server/exchange.py), so a held answer is followed at once by
the next request, and an endpoint that answers at once (a SuperLink without this) is asked no
more often than before.

``INSITE_HELD_POLLS=0`` in a SuperLink's or SuperNode's environment turns this off there: every
poll is answered at once, as in Flower (bench/round_floor.py's bare Flower runs so).

Bounds. ``hold_s`` is far below the askers' request timeout (Flower's HTTP client: 30 s) and the
proxy's (300 s); at most ``slots`` requests are held at once per endpoint, and any more are
answered at once as in Flower, so the server's request threads (FastAPI runs these handlers in
anyio's pool of 40) stay free for uploads and downloads.
"""

from __future__ import annotations

import functools
import inspect
import os
import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

ENV = "INSITE_HELD_POLLS"  # "0": answered at once, as in Flower

#: How long an empty answer is held: at most this late to notice a deadline, this often asked when idle.
HOLD_S = 1.0


def wanted() -> bool:
    """Whether this process holds its polls (``$INSITE_HELD_POLLS``, on unless "0")."""
    return os.environ.get(ENV, "1") != "0"


class Arrivals:
    """What held requests wait on: a count of things stored, and which of the awaited keys arrived.

    A request for one object waits for that object's key only, so an upload of many objects wakes
    each waiting request once (to ask its store again) rather than at every object.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._count = 0
        self._awaited: dict[str, int] = {}  # key -> requests waiting for it
        self._arrived: set[str] = set()  # awaited keys stored since

    @property
    def count(self) -> int:
        return self._count

    def announce(self, key: str | None = None) -> None:
        with self._changed:
            self._count += 1
            if key in self._awaited:
                self._arrived.add(key)
            self._changed.notify_all()

    def expect(self, key: str) -> None:
        """Register a wait for ``key`` (before asking for it, so that its arrival in between counts)."""
        with self._changed:
            self._awaited[key] = self._awaited.get(key, 0) + 1

    def forget(self, key: str) -> None:
        with self._changed:
            self._awaited[key] -= 1
            if not self._awaited[key]:
                del self._awaited[key]
                self._arrived.discard(key)

    def wait_past(self, seen: int, timeout: float, key: str | None = None) -> bool:
        """Wait at most ``timeout`` s until the count is no longer ``seen`` (or ``key``, expected, arrived)."""
        with self._changed:
            if key is None:
                return self._changed.wait_for(lambda: self._count != seen, timeout)
            return self._changed.wait_for(lambda: key in self._arrived, timeout)


def announcing(store: Callable[P, R], arrivals: Arrivals, key: str | None = None) -> Callable[P, R]:
    """``store`` (a state's method), announcing to ``arrivals`` each time it has stored something.

    ``key``: the name of ``store``'s parameter that names what was stored (e.g. ``object_id``).
    """
    signature = inspect.signature(store)

    @functools.wraps(store)
    def stored(*args: P.args, **kwargs: P.kwargs) -> R:
        result = store(*args, **kwargs)
        arrivals.announce(str(signature.bind(*args, **kwargs).arguments[key]) if key else None)
        return result

    return stored


def no_messages(response: Any) -> bool:
    """A ``pull-messages`` answer (Fleet or runtime API) with no message in it."""
    return not response.messages_list


def still_uploading(response: Any) -> bool:
    """A ``pull-object`` answer for an object that is listed but whose bytes have not arrived yet."""
    return bool(response.object_found and not response.object_available)


def object_of(request: Any) -> str:
    """The object a ``pull-object`` request asks for."""
    return str(request.object_id)


def hold_in(
    module: ModuleType,
    handler: str,
    is_empty: Callable[[Any], bool],
    arrivals: Arrivals,
    slots: int,
    key: Callable[[Any], str] | None = None,
) -> None:
    """Replace ``module.handler`` (where Flower's router looks it up per request) by its :func:`held` form."""
    setattr(module, handler, held(getattr(module, handler), is_empty, arrivals, HOLD_S, slots, key))


def announce_from(cls: type, method: str, arrivals: Arrivals, key: str | None = None) -> None:
    """Make ``cls.method`` (a state's store method) announce to ``arrivals``; see :func:`announcing`."""
    setattr(cls, method, announcing(getattr(cls, method), arrivals, key))


def has_all(places: dict[Any, tuple[str, ...]]) -> bool:
    """Whether each module or class has each named callable: Flower's code is where these patches expect it."""
    return all(callable(getattr(place, name, None)) for place, names in places.items() for name in names)


def held(
    answer: Callable[P, R],
    is_empty: Callable[[R], bool],
    arrivals: Arrivals,
    hold_s: float = HOLD_S,
    slots: int = 16,
    key: Callable[[Any], str] | None = None,
) -> Callable[P, R]:
    """``answer`` (an endpoint's handler), its empty answers held for news up to ``hold_s``.

    ``key``: what of the handler's ``request`` it waits for (an object's id); without it, any news.
    """
    free = threading.BoundedSemaphore(slots)
    signature = inspect.signature(answer)

    @functools.wraps(answer)
    def answer_when_there_is_news(*args: P.args, **kwargs: P.kwargs) -> R:
        awaited = key(signature.bind(*args, **kwargs).arguments["request"]) if key else None
        if awaited is not None:
            arrivals.expect(awaited)  # before asking: its arrival meanwhile is not missed
        seen = arrivals.count  # likewise, for any news
        try:
            result = answer(*args, **kwargs)
            if not is_empty(result) or not free.acquire(blocking=False):
                return result
            try:
                deadline = time.monotonic() + hold_s
                while is_empty(result):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not arrivals.wait_past(seen, remaining, awaited):
                        break
                    seen = arrivals.count
                    result = answer(*args, **kwargs)
                    if awaited is not None:  # what it waited for was stored: this is its answer
                        break
            finally:
                free.release()
            return result
        finally:
            if awaited is not None:
                arrivals.forget(awaited)

    return answer_when_there_is_news
