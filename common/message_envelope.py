"""A small message's whole content as one Flower object on the wire.

Why. Flower moves a message as a tree of objects (the message, its record dict, each record, each
array and each chunk), one request each at every hop: coordinator to SuperLink, SuperLink to
SuperNode through the proxy, SuperNode to the site's task, and back. With its weights packed
(common/packed_arrays.py) a training message was still 6 objects and its reply 7; a SecAgg+
message 4 to 7. Each request costs 20-100 ms on a 2-core coordinator host (the SuperLink is
FastAPI on SQLite behind TLS; py-spy in docs/benchmarks/round_floor.md), and these requests are
most of what a round spends outside training. Enveloped, the content is one ConfigRecord holding
Flower's own serialisation of the record dict: 3 objects (message, record dict, envelope),
whatever the content carries.

Only content that fits one of Flower's chunks (``FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE``, 5 MB) is
enveloped: larger content moves as chunks anyway, so its objects are mostly chunks, and one
object of hundreds of MB would be held whole at every hop.

The envelope is the outermost layer at both ends. The coordinator's grid packs weights and then
envelopes (server/packed_grid.py); a site's ledger opens the envelope before anything else reads
the message, and seals the reply in an envelope made of the very bytes it records
(client/egress.py). A site answers enveloped only when asked enveloped, so a coordinator that
does not envelope is answered as before.
"""

from __future__ import annotations

from flwr.app import ConfigRecord, RecordDict
from flwr.common.constant import FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
from flwr.proto.recorddict_pb2 import RecordDict as ProtoRecordDict
from google.protobuf.message import DecodeError

from common.errors import FederationError

ENVELOPE = "insite.envelope/1"  # the one record's key marks an enveloped content
_CONTENT = "content"
LIMIT = FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE  # bytes: content larger than one chunk travels as it is


def is_enveloped(content: RecordDict) -> bool:
    return list(content) == [ENVELOPE] and isinstance(content[ENVELOPE], ConfigRecord)


def serialised(content: RecordDict) -> bytes:
    """Flower's own wire form of ``content``: what an envelope carries and a site's ledger records."""
    return recorddict_to_proto(content).SerializeToString()


def sealed(data: bytes) -> RecordDict:
    """The envelope of content already :func:`serialised` as ``data``."""
    return RecordDict({ENVELOPE: ConfigRecord({_CONTENT: data})})


def enveloped(content: RecordDict, limit: int = LIMIT) -> RecordDict:
    """``content`` as one object if its serialisation fits ``limit`` bytes, else ``content`` itself.

    Content already enveloped (a message sent again) is returned as it is.
    """
    if is_enveloped(content) or _bytes_at_least(content) > limit:  # a large model is not serialised only to be measured
        return content
    data = serialised(content)
    return sealed(data) if len(data) <= limit else content


def opened(content: RecordDict, source: str) -> RecordDict:
    """The content an envelope carries (``content`` itself if it is not one); ``source`` names the sender in errors."""
    if not is_enveloped(content):
        return content
    data = content[ENVELOPE].get(_CONTENT)
    if not isinstance(data, bytes):
        raise FederationError(f"{source}: malformed message envelope (no content bytes)")
    proto = ProtoRecordDict()
    try:
        proto.ParseFromString(data)
        return recorddict_from_proto(proto)
    except (DecodeError, ValueError, TypeError, KeyError, AttributeError, RecursionError) as error:
        raise FederationError(f"{source}: malformed message envelope ({error or type(error).__name__})") from None


def _bytes_at_least(content: RecordDict) -> int:
    """The bytes of the tensors and byte strings in ``content``: a lower bound of its serialisation."""
    size = sum(len(array.data) for record in content.array_records.values() for array in record.values())
    for record in content.config_records.values():
        for value in record.values():
            items = value if isinstance(value, list) else [value]
            size += sum(len(item) for item in items if isinstance(item, bytes))
    return size
