"""How a SecAgg+ masked update travels: as 32-bit unsigned integers, half of Flower's 64 bits.

Why. Flower's ``secaggplus_mod`` sends each masked vector as int64, though each value is already
reduced modulo the protocol's modulus, which ``SecAggPlusWorkflow`` caps at 2**32: every value
fits a uint32 exactly. On the wire a masked update was twice the model's float32 size (38 MB per
site for a 19 MB model). The site narrows its masked vectors after masking (client/secure.py) and
the coordinator widens them back before Flower's workflow adds them up (server/secure.py), so
Flower's arithmetic is untouched and the sum is the same to the bit.
"""

from __future__ import annotations

import logging

import numpy as np
from flwr.common import bytes_to_ndarray, ndarray_to_bytes

WIRE_DTYPE = np.uint32
_WIRE_MAX = int(np.iinfo(WIRE_DTYPE).max)

log = logging.getLogger(__name__)


def narrowed(vectors: list[bytes]) -> list[bytes]:
    """Each masked vector as uint32; one whose values do not all fit (a modulus above 2**32) stays as it is."""
    out = []
    for raw in vectors:
        array = bytes_to_ndarray(raw)
        if array.size and (int(array.min()) < 0 or int(array.max()) > _WIRE_MAX):
            log.warning("a masked vector holds values beyond 32 bits (modulus above 2**32?); sent unnarrowed")
            out.append(raw)
        else:
            out.append(ndarray_to_bytes(array.astype(WIRE_DTYPE)))
    return out


def widened(vectors: list[bytes]) -> list[bytes]:
    """Each masked vector as int64, the dtype Flower's SecAgg+ arithmetic works in."""
    return [ndarray_to_bytes(bytes_to_ndarray(raw).astype(np.int64)) for raw in vectors]
