"""The run's Grid with model weights packed on the wire, and small messages one object.

See common/packed_arrays.py and common/message_envelope.py for why.

Every coordinator exchange goes through this one wrapper, so the round loop, SecAgg+, evaluation
and statistics keep handling plain ArrayRecords: what the coordinator sends is packed on its way
out (weights packed, then the whole enveloped if it fits), and each reply is opened and unpacked
as it is pulled. A reply whose envelope or packing is malformed becomes that site's error reply
(the round then treats it like any failed site) instead of an exception that would end the run.
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ArrayRecord, Error, Message
from flwr.app.message.message import make_message  # Flower's own way to rebuild a message as an error reply

from common.errors import FederationError
from common.message_envelope import enveloped, opened
from common.packed_arrays import pack_record, unpacked
from server.grid_wrapper import GridWrapper

MALFORMED_REPLY = 101  # next to client.app.SITE_ERROR: a reply the coordinator could not read


class PackedGrid(GridWrapper):
    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.wrapped.push_messages(_packed_all(messages))

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [_unpacked_reply(reply) for reply in self.wrapped.pull_messages(message_ids)]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        replies = self.wrapped.send_and_receive(_packed_all(messages), timeout=timeout)
        return [_unpacked_reply(reply) for reply in replies]


def _packed_all(messages: Iterable[Message]) -> list[Message]:
    """The messages, weights packed in place, small content enveloped; a model sent to every site is packed once."""
    messages = list(messages)
    done: dict[int, tuple[ArrayRecord, ArrayRecord]] = {}  # id -> (the record, kept alive; its packing)
    for message in messages:
        if not message.has_content():
            continue
        content = message.content
        for key, record in list(content.array_records.items()):
            if len(record) > 1:
                if id(record) not in done:
                    done[id(record)] = (record, pack_record(record))
                content[key] = done[id(record)][1]
        message.content = enveloped(content)
    return messages


def _unpacked_reply(reply: Message) -> Message:
    if reply.has_error() or not reply.has_content():
        return reply
    source = f"node {reply.metadata.src_node_id}"
    try:
        reply.content = unpacked(opened(reply.content, source), source)
    except FederationError as error:
        return make_message(reply.metadata, error=Error(code=MALFORMED_REPLY, reason=str(error)))
    return reply
