"""The coordinator's one way to send messages and wait for the sites' replies: bounded, attributed.

Flower's ``Grid.send_and_receive`` polls every 3 s, waits for every reply (or a single timeout) and
returns replies without saying which sites did not answer. Every exchange of insite (a plain
training round, an evaluation, each of the four SecAgg+ stages) goes through :func:`exchange`:

- it polls at most every ``poll_s`` (0.1 s by default, ``$INSITE_COORDINATOR_POLL_S`` to measure
  others: bench/round_floor.py --polls; each poll is one small request to the local SuperLink,
  which holds it until a reply arrives, up to 1 s: deploy/host/held_polls.py);
- it ends at the stage's hard deadline, or, once ``quorum`` sites have answered, ``grace_s`` later:
  a straggler costs the round at most that detection delay, and a late reply is never used (it is
  never pulled, so it cannot be half-used);
- every site that failed or did not answer is named, with the reason, in ``failures``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from flwr.app import Message
from flwr.serverapp import Grid

log = logging.getLogger(__name__)

POLL_ENV = "INSITE_COORDINATOR_POLL_S"
DEFAULT_POLL_S = float(os.environ.get(POLL_ENV, "0.1"))


@dataclass(frozen=True)
class Deadline:
    """How long one exchange may take: ``limit_s`` in all, ``grace_s`` once the quorum answered."""

    limit_s: float
    grace_s: float
    quorum: int


@dataclass
class Exchange:
    """The outcome of one send-and-wait: good replies, and the sites that failed, with why."""

    replies: list[Message] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)  # site -> why it failed or was left out
    errors: list[Message] = field(default_factory=list)  # the error replies themselves
    seconds: float = 0.0
    dropped: dict[str, str] = field(default_factory=dict)  # site -> the stage it dropped out at

    @property
    def answered(self) -> set[int]:
        return {reply.metadata.src_node_id for reply in self.replies}


def node_names(grid: Grid) -> dict[int, str]:
    """Node id -> site name, as the coordinator registered each site's key (``--name``)."""
    return {node.node_id: node.name or f"node {node.node_id}" for node in grid.get_nodes()}


def exchange(
    grid: Grid,
    messages: Iterable[Message],
    deadline: Deadline,
    what: str,
    names: Mapping[int, str],
    poll_s: float = DEFAULT_POLL_S,
) -> Exchange:
    """Send ``messages``, collect replies until all answered or ``deadline`` says stop."""
    started = time.monotonic()
    messages = list(messages)
    destination = {}
    for message_id, message in zip(grid.push_messages(messages), messages, strict=True):
        destination[message_id] = message.metadata.dst_node_id
    pending = set(destination)
    outcome = Exchange()
    quorum_at: float | None = None
    while pending:
        asked, waiting = time.monotonic(), len(pending)
        for reply in grid.pull_messages(pending):
            message_id = reply.metadata.reply_to_message_id
            pending.discard(message_id)
            node = destination.get(message_id, reply.metadata.src_node_id)
            if reply.has_error():
                outcome.errors.append(reply)
                outcome.failures[names.get(node, f"node {node}")] = (
                    reply.error.reason or f"error code {reply.error.code}"
                )
                log.warning("%s: %s failed: %s", what, names.get(node, f"node {node}"), reply.error.reason)
            else:
                outcome.replies.append(reply)
        now = time.monotonic()
        if quorum_at is None and len(outcome.replies) >= deadline.quorum:
            quorum_at = now
        if not pending or now - started >= deadline.limit_s:
            break
        if quorum_at is not None and now - quorum_at >= deadline.grace_s:
            break
        # After a pull that found nothing, the rest of poll_s from its start: insite's SuperLink
        # holds an empty pull for news (up to 1 s, deploy/host/held_polls.py), and the next then
        # goes at once. After one that found replies, the next goes at once too (one extra pull
        # per reply at most, against a SuperLink that answers at once).
        if len(pending) == waiting:
            time.sleep(max(0.0, poll_s - (time.monotonic() - asked)))
    waited = time.monotonic() - started
    for message_id in pending:
        node = destination[message_id]
        name = names.get(node, f"node {node}")
        if quorum_at is not None and waited < deadline.limit_s:
            reason = f"no {what} reply {deadline.grace_s:.0f} s after the quorum had answered (dropped as a straggler)"
        else:
            reason = f"no {what} reply within {deadline.limit_s:.0f} s"
        outcome.failures[name] = reason
        log.warning("%s: %s", name, reason)
    outcome.seconds = waited
    return outcome
