"""Whether freed memory goes back to the host: after each message's copies, not between training steps.

Every Flower process insite starts hands large freed blocks (16 MB and up) back to the host at once
(``MALLOC_MMAP_THRESHOLD_``, deploy/host/flower.py). Without that each process keeps its high-water
mark for good: a 100M-parameter model (400 MB) passes through a SuperNode, a site's task and the
ServerApp as several transient copies (pulled chunks, the joined object, the unpacked tensors, the
packed reply, its ledger bytes), and three sites' tasks each holding ~4.7 GB at the same moment did
not fit a 23 GB host (``python -m bench.payload``). Training and scoring are the exception:
returning their activations to the host after every step cost 9x the system time (measured when the
federation was first built), so :func:`kept_while_computing` keeps every block in the process while
the site computes, and hands the free ones back when it is done. The 16 MB are above Flower's object
chunks (5 MB), which pass through every process several times a round: handing each of those back
(a 1 MB threshold) cost 30% of a 20M-parameter round (17.1-17.4 s against 12.4-13.2 s,
``python -m bench.payload --channels 66``), for memory the next chunk reuses anyway.

glibc's ``mallopt`` is called through ctypes: no maintained Python package wraps it. Elsewhere
(macOS, musl) this does nothing and the allocator's own policy applies.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# glibc's mallopt parameters (malloc.h) and the values it starts with when, as here,
# MALLOC_MMAP_THRESHOLD_ is set (its dynamic threshold is then off).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536
_KEEP_EVERYTHING = 2**31 - 1  # the largest trim threshold mallopt takes (an int)

#: What deploy/host/flower.py puts in every Flower process's environment.
RETURN_LARGE_BLOCKS_ENV = {"MALLOC_MMAP_THRESHOLD_": str(16 * 1024 * 1024)}


def _glibc() -> ctypes.CDLL | None:
    library = ctypes.CDLL(None)
    return library if hasattr(library, "mallopt") and hasattr(library, "malloc_trim") else None


_LIBC = _glibc()
_lock = threading.Lock()
_computing = 0  # contexts open in this process (a deferred score may compute beside a reply being sent)


@contextmanager
def kept_while_computing() -> Iterator[None]:
    """Keep freed memory in the process for the duration; afterwards return what is free to the host."""
    global _computing  # one allocator per process, so one count
    if _LIBC is None:
        yield
        return
    with _lock:
        if _computing == 0:
            _LIBC.mallopt(_M_MMAP_MAX, 0)
            _LIBC.mallopt(_M_TRIM_THRESHOLD, _KEEP_EVERYTHING)
        _computing += 1
    try:
        yield
    finally:
        with _lock:
            _computing -= 1
            if _computing == 0:
                _LIBC.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
                _LIBC.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
                _LIBC.malloc_trim(0)
