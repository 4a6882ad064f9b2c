"""A Grid that hands every call to another: the base of the coordinator's Grid adaptations.

Subclasses override only what they change, and stay a real :class:`Grid` for everything that
takes one: server/packed_grid.py packs model weights on the wire, the round loop shows a strategy
only the round's sites (server/rounds.py), the SecAgg+ driver gives each stage its deadline
(server/secure.py), and deploy/simulation names the simulation engine's virtual nodes.
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import Message, RecordDict
from flwr.proto.node_pb2 import NodeInfo
from flwr.serverapp import Grid
from flwr.supercore.run import Run


class GridWrapper(Grid):
    def __init__(self, grid: Grid) -> None:
        self.wrapped = grid

    def set_run(self, run: Run) -> None:
        self.wrapped.set_run(run)

    @property
    def run(self) -> Run:
        return self.wrapped.run

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        return self.wrapped.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.wrapped.get_node_ids()

    def get_nodes(self) -> Iterable[NodeInfo]:
        return self.wrapped.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.wrapped.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.wrapped.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.wrapped.send_and_receive(messages, timeout=timeout)
