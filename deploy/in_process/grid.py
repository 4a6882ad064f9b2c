"""A stub of Flower's ``Grid`` that delivers each message to a real ClientApp in this process.

The round loop (``server/rounds.py``) and the site's ClientApp (``client/app.py``) run unchanged;
only the transport is replaced, so a run folder made here has exactly the shape production
writes (the real federation tests cover the transport). Every message goes through Flower's own
serialisation, as it would on the wire, so no object is shared between the coordinator and a site.

Faults are injected per node: ``silent`` nodes never answer, ``drop_at`` nodes fall silent from
the named stage on (``train``/``evaluate``, or a SecAgg+ stage as server.secure names them:
``setup``, ``share-keys``, ``masked-update``, ``unmask``), ``failing`` nodes answer with an error,
``offline`` nodes are not listed as online, and ``tamper`` rewrites a node's reply (a modified site
that bypasses its egress guard).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.proto.node_pb2 import NodeInfo
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from common.message_envelope import opened
from server.secure import STAGE_NAMES


def stage_of(message: Message) -> str:
    """The SecAgg+ stage a message belongs to (as server.secure names it), else its type."""
    content = opened(message.content, "the coordinator") if message.has_content() else None
    configs = content.config_records.get(RECORD_KEY_CONFIGS) if content is not None else None
    if configs is not None and Key.STAGE in configs:
        return STAGE_NAMES[str(configs[Key.STAGE])]
    return message.metadata.message_type


def _over_the_wire(message: Message) -> Message:
    """A copy made the way Flower moves messages: serialised and parsed again."""
    copy = message_from_proto(message_to_proto(message))
    copy.metadata.__dict__["_message_id"] = message.metadata.message_id
    return copy


@dataclass
class SiteNode:
    """One site as the grid sees it: its node id, name and the context its ClientApp gets."""

    node_id: int
    name: str
    context: Context


@dataclass
class InProcessGrid(Grid):
    app: ClientApp
    nodes: list[SiteNode]
    run_id: int = 1
    silent: set[int] = field(default_factory=set)
    failing: dict[int, str] = field(default_factory=dict)
    tamper: dict[int, Callable[[Message], Message]] = field(default_factory=dict)
    offline: set[int] = field(default_factory=set)
    drop_at: dict[int, str] = field(default_factory=dict)
    ignore_next: dict[int, int] = field(default_factory=dict)  # node -> how many messages it leaves unanswered
    offline_polls: dict[int, int] = field(default_factory=dict)  # node -> listed offline for this many polls
    crash_in_round: int | None = None  # the coordinator "dies" (SystemExit) sending this round's first message
    delivered: list[Message] = field(default_factory=list)
    _replies: dict[str, Message] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Flower stamps every new Message with the process's task identity (the ServerApp's).
        TaskIdentity.run_id = self.run_id
        TaskIdentity.node_id = SUPERLINK_NODE_ID
        TaskIdentity.task_id = 1

    @property
    def run(self) -> Run:
        return Run.create_empty(self.run_id)

    def set_run(self, run: Run) -> None:
        self.run_id = run.run_id

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return [node.node_id for node in self.nodes if node.node_id not in self.offline]

    def get_nodes(self) -> Iterable[NodeInfo]:
        return [
            NodeInfo(node_id=node.node_id, name=node.name, status="online")
            for node in self.nodes
            if node.node_id not in self.offline
        ]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            ids.append(message.metadata.message_id)
            self.delivered.append(message)
            node = next(n for n in self.nodes if n.node_id == message.metadata.dst_node_id)
            if self.crash_in_round is not None and message.metadata.group_id == str(self.crash_in_round):
                raise SystemExit(f"coordinator killed in round {self.crash_in_round}")
            if self.drop_at.get(node.node_id) == stage_of(message):
                self.silent.add(node.node_id)
            if self.ignore_next.get(node.node_id):
                self.ignore_next[node.node_id] -= 1
                continue
            if node.node_id in self.silent or node.node_id in self.offline:
                continue
            incoming = _over_the_wire(message)
            if node.node_id in self.failing:
                reply = Message(Error(code=0, reason=self.failing[node.node_id]), reply_to=incoming)
            else:
                reply = self.app(incoming, node.context)
            if node.node_id in self.tamper:
                reply = self.tamper[node.node_id](reply)
            self._replies[message.metadata.message_id] = _over_the_wire(reply)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        ids = set(self.push_messages(messages))
        deadline = time.monotonic() + (timeout or 0.0)
        replies = list(self.pull_messages(ids))
        while len(replies) < len(ids) and timeout is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        return replies
