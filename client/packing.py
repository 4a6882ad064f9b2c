"""The site's side of packed model weights (common/packed_arrays.py): unpack what came, answer alike.

The mod sits between the ledger and the egress guard: the guard checks the tensors themselves, the
ledger records the reply as it leaves, packed. A message that came unpacked (a coordinator that
does not pack) is answered unpacked.
"""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp.typing import ClientAppCallable

from common.packed_arrays import has_packed, packed, unpacked


def packed_arrays_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    came_packed = msg.has_content() and has_packed(msg.content)
    if came_packed:
        msg.content = unpacked(msg.content, "the coordinator")
    reply = call_next(msg, context)
    if came_packed and reply.has_content():
        reply.content = packed(reply.content)
    return reply
