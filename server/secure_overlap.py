"""The next round's SecAgg+ key exchange, carried inside this round's messages.

Why. SecAgg+ takes four exchanges a round: set-up (public keys), key shares, the masked update
(the training) and unmasking. Only the masked update needs the round's model; set-up and key
shares need only the round's sites. Each exchange costs a message through the proxy, a task at
every site and a reply (~1 s at the floor on a 2-core host, bench/round_floor.py), so the next
round's set-up rides in this round's masked-update messages and its key shares in this round's
unmasking messages: a round whose sites are the ones keyed during the previous round costs two
exchanges, not four. Nothing about the protocol changes: each round has its own keys, masks and
shares, and a site keeps each round's protocol state apart (client/secure.py).

How. Flower's own stage methods run unchanged. The next round's stage runs in a thread on a
:class:`_Seat`, a Grid whose ``send_and_receive`` hands its messages over and waits for the
replies; :func:`carried` puts each site's next-round stage into that site's message of this round
(the :data:`~common.protocol.NEXT_ROUND_RECORD` config record), runs this round's exchange, and
splits every reply in two. A reply without the record (the site's next-round stage failed there,
or the site runs an app that does not carry it) is an error for the next round only: that round
then sets its keys up afresh, in exchanges of its own.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable

from flwr.app import ConfigRecord, Error, Message, RecordDict
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.serverapp import Grid

from common.protocol import NEXT_ROUND_GROUP, NEXT_ROUND_RECORD
from server.grid_wrapper import GridWrapper

log = logging.getLogger(__name__)

Stage = Callable[[Grid], bool]  # one of Flower's SecAgg+ stage methods, bound to its round's state
NOT_CARRIED = 103  # error code of a next-round reply a site did not send (Flower reserves small codes)


class _Seat(GridWrapper):
    """The next round's stage sends through this: its messages go into this round's exchange."""

    def __init__(self, grid: Grid, wait_s: float) -> None:
        super().__init__(grid)
        self.wait_s = wait_s
        self.outbound: queue.Queue[list[Message] | None] = queue.Queue()
        self.inbound: queue.Queue[list[Message]] = queue.Queue()

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        self.outbound.put(list(messages))
        try:
            return self.inbound.get(timeout=self.wait_s)
        except queue.Empty:
            log.error("no replies for the next round's secure-aggregation stage within %.0f s", self.wait_s)
            return []


class _Carrier(GridWrapper):
    """This round's stage sends through this: each site's message also carries its next-round stage."""

    def __init__(self, grid: Grid, seat: _Seat) -> None:
        super().__init__(grid)
        self.seat = seat

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        try:
            riders = self.seat.outbound.get(timeout=self.seat.wait_s)
        except queue.Empty:
            log.error(
                "the next round's secure-aggregation stage handed over no messages within %.0f s; "
                "its keys are set up afresh",
                self.seat.wait_s,
            )
            riders = None
        if not riders:
            return self.wrapped.send_and_receive(messages, timeout=timeout)
        by_node = {rider.metadata.dst_node_id: rider for rider in riders}
        replies = list(self.wrapped.send_and_receive([_with_rider(m, by_node) for m in messages], timeout=timeout))
        self.seat.inbound.put(
            [_rider_reply(reply, by_node) for reply in replies if reply.metadata.src_node_id in by_node]
        )
        return replies


def _with_rider(message: Message, riders: dict[int, Message]) -> Message:
    """``message`` with its site's next-round stage, if any (a new message: Flower's may share their content)."""
    rider = riders.get(message.metadata.dst_node_id)
    if rider is None:
        return message
    part = ConfigRecord(dict(rider.content.config_records[RECORD_KEY_CONFIGS]))
    part[NEXT_ROUND_GROUP] = rider.metadata.group_id
    content = RecordDict({**message.content, NEXT_ROUND_RECORD: part})
    meta = message.metadata
    return Message(content, dst_node_id=meta.dst_node_id, message_type=meta.message_type, group_id=meta.group_id)


def _rider_reply(reply: Message, riders: dict[int, Message]) -> Message:
    """The next round's reply cut out of ``reply`` (which keeps only this round's part)."""
    rider = riders[reply.metadata.src_node_id]
    if reply.has_error():
        return Message(reply.error, reply_to=rider)
    part = reply.content.config_records.get(NEXT_ROUND_RECORD)
    if part is None:
        return Message(Error(code=NOT_CARRIED, reason="no reply for the next round's stage"), reply_to=rider)
    del reply.content.config_records[NEXT_ROUND_RECORD]
    return Message(RecordDict({RECORD_KEY_CONFIGS: part}), reply_to=rider)


def carried(grid: Grid, stage: Stage, rider: Stage | None, wait_s: float) -> tuple[bool, bool]:
    """Run ``stage`` through ``grid`` with ``rider``'s messages inside its own: (stage ok, rider ok).

    ``wait_s`` bounds each hand-over between the two (the rider's wait spans this round's whole
    exchange, so it is at least that exchange's deadline).
    """
    if rider is None:
        return stage(grid), False
    seat = _Seat(grid, wait_s)
    outcome: list[bool] = []

    def ride() -> None:
        try:
            outcome.append(rider(seat))
        except Exception:
            log.exception("the next round's secure-aggregation key exchange failed; its keys are set up afresh")
        finally:
            seat.outbound.put(None)  # in case it ended without sending

    thread = threading.Thread(target=ride, name="next round's SecAgg+ key exchange", daemon=True)
    thread.start()
    try:
        ok = stage(_Carrier(grid, seat))
    finally:
        seat.inbound.put([])  # a rider whose messages were never carried hears from no site
        thread.join(wait_s)
    if thread.is_alive():
        log.error("the next round's secure-aggregation key exchange did not end within %.0f s", wait_s)
        return ok, False
    return ok, bool(outcome and outcome[0])
