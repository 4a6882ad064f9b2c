"""A message's model weights as one Flower object on the wire instead of one per tensor.

Flower moves a message as a tree of objects, each its own request through the proxy to the
SuperLink and back out to the site: a 21-tensor UNet is ~46 of them per message (an Array and a
chunk per tensor), pulled two at a time on a 2-core host, whatever the model's size. Measured on
the round floor (docs/benchmarks/round_floor.md) that was ~10 s of a 19 s round. Packed, an
ArrayRecord becomes a single Array (one chunk per 5 MB), so a message is a handful of objects.

The packing is lossless and below the application: each tensor's serialised bytes (Flower's own
``.npy`` encoding), name, dtype, shape and serialisation type travel unchanged and come back as
the same :class:`~flwr.app.Array` objects (same object ids), so the egress guard, the update
checks and checkpoints all see the tensors exactly as before (the site's ledger records the
reply as it leaves, packed, and describes its tensors from the layout). The coordinator's grid packs
what it sends (server/packed_grid.py); a site unpacks and answers in the form it was asked
(client/app.py), so a coordinator that does not pack is still answered plainly.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable

from flwr.app import Array, ArrayRecord, RecordDict

from common.errors import FederationError

PACKED_STYPE = "insite.packed-arrays/1"  # the one Array's serialisation type marks a packed record
_PACKED_KEY = "packed"
_HEADER_LENGTH = struct.Struct("<Q")  # bytes of the JSON layout that follows


def is_packed(record: ArrayRecord) -> bool:
    return len(record) == 1 and next(iter(record.values())).stype == PACKED_STYPE


def has_packed(content: RecordDict) -> bool:
    return any(is_packed(record) for record in content.array_records.values())


def tensor_shapes(record: ArrayRecord) -> list[tuple[int, ...]]:
    """The shape of every tensor in ``record``, packed or not, without unpacking the data."""
    if not is_packed(record):
        return [tuple(array.shape) for array in record.values()]
    data = memoryview(next(iter(record.values())).data)
    (header_length,) = _HEADER_LENGTH.unpack_from(data)
    layout = json.loads(bytes(data[_HEADER_LENGTH.size : _HEADER_LENGTH.size + header_length]))
    return [tuple(entry[2]) for entry in layout]


def pack_record(record: ArrayRecord) -> ArrayRecord:
    """One Array holding the layout (names, dtypes, shapes, types, lengths) and every tensor's bytes."""
    layout = [[name, array.dtype, list(array.shape), array.stype, len(array.data)] for name, array in record.items()]
    header = json.dumps(layout).encode()
    data = b"".join([_HEADER_LENGTH.pack(len(header)), header, *(array.data for array in record.values())])
    return ArrayRecord({_PACKED_KEY: Array(dtype="uint8", shape=(len(data),), stype=PACKED_STYPE, data=data)})


def unpack_record(record: ArrayRecord, source: str) -> ArrayRecord:
    """The tensors :func:`pack_record` packed, in their order; a malformed packing names ``source``."""
    data = memoryview(next(iter(record.values())).data)
    try:
        (header_length,) = _HEADER_LENGTH.unpack_from(data)
        start = _HEADER_LENGTH.size + header_length
        layout = json.loads(bytes(data[_HEADER_LENGTH.size : start]))
        if sum(entry[4] for entry in layout) != len(data) - start:
            raise ValueError(f"the layout describes {sum(e[4] for e in layout)} bytes, {len(data) - start} came")
        arrays = {}
        for name, dtype, shape, stype, length in layout:
            if not isinstance(length, int) or length < 0:
                raise ValueError(f"tensor {name!r} has length {length!r}")
            piece = bytes(data[start : start + length])
            arrays[str(name)] = Array(dtype=str(dtype), shape=tuple(shape), stype=str(stype), data=piece)
            start += length
    except (struct.error, ValueError, TypeError, IndexError, KeyError, RecursionError) as error:
        raise FederationError(f"{source}: malformed packed weights ({error})") from None
    return ArrayRecord(arrays)


def packed(content: RecordDict) -> RecordDict:
    """``content`` with every ArrayRecord of two or more tensors packed (other records as they are)."""
    return _mapped(content, lambda record: pack_record(record) if len(record) > 1 else record)


def unpacked(content: RecordDict, source: str) -> RecordDict:
    """``content`` with every packed ArrayRecord unpacked; ``source`` names the sender in errors."""
    return _mapped(content, lambda record: unpack_record(record, source) if is_packed(record) else record)


def _mapped(content: RecordDict, convert: Callable[[ArrayRecord], ArrayRecord]) -> RecordDict:
    return RecordDict(
        {key: convert(record) if isinstance(record, ArrayRecord) else record for key, record in content.items()}
    )
