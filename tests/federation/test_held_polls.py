"""Held polls (deploy/host/held_polls.py): an empty answer waits, bounded, for news; and the premises in Flower.

The real federation test (test_fed_integration.py) checks in the proxy's access log that the
SuperNodes' polls were held by a real SuperLink.
"""

import threading
import time
import types

import pytest
from flwr.proto.fleet_pb2 import PullMessagesResponse
from flwr.proto.message_pb2 import PullObjectResponse

from deploy.host.held_polls import HOLD_S, Arrivals, announcing, held, no_messages, still_uploading


class Mailbox:
    """A state with a store method and a handler that answers from it, as Flower's are shaped."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.asked = 0

    def store(self, item: str) -> None:
        self.items.append(item)

    def answer(self) -> list[str]:
        self.asked += 1
        return list(self.items)


def held_mailbox(hold_s: float = 5.0, slots: int = 4) -> tuple[Mailbox, Arrivals, object]:
    box, arrivals = Mailbox(), Arrivals()
    box.store = announcing(box.store, arrivals)  # type: ignore[method-assign]
    return box, arrivals, held(box.answer, lambda items: not items, arrivals, hold_s, slots)


def store_later(box: Mailbox, item: str, after_s: float) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(after_s), box.store(item)))
    thread.start()
    return thread


def test_an_answer_with_news_is_given_at_once():
    box, _, answer = held_mailbox()
    box.store("message")
    started = time.monotonic()
    assert answer() == ["message"] and time.monotonic() - started < 0.1 and box.asked == 1


def test_an_empty_answer_waits_for_what_is_stored_and_then_carries_it():
    box, _, answer = held_mailbox(hold_s=5.0)
    writer = store_later(box, "message", 0.3)
    started = time.monotonic()
    assert answer() == ["message"]
    assert 0.25 <= time.monotonic() - started < 2.0  # woken by the store, long before the 5 s bound
    writer.join()


def test_an_empty_answer_is_given_when_the_hold_runs_out():
    box, _, answer = held_mailbox(hold_s=0.4)
    started = time.monotonic()
    assert answer() == []
    assert 0.35 <= time.monotonic() - started < 1.5 and box.asked == 1


def test_news_stored_while_the_first_answer_was_made_is_not_missed():
    box, arrivals = Mailbox(), Arrivals()

    def answer_then_news_arrives() -> list[str]:
        found = box.answer()
        if not box.items:  # between this answer and the wait: the store announces now
            box.items.append("message")
            arrivals.announce()
        return found

    waiting = held(answer_then_news_arrives, lambda items: not items, arrivals, 5.0, 1)
    started = time.monotonic()
    assert waiting() == ["message"] and time.monotonic() - started < 1.0


def test_past_its_slots_an_empty_answer_is_given_at_once():
    box, _, answer = held_mailbox(hold_s=1.0, slots=1)
    first = threading.Thread(target=answer)
    first.start()
    time.sleep(0.1)  # the one slot is taken
    started = time.monotonic()
    assert answer() == [] and time.monotonic() - started < 0.3
    first.join()
    started = time.monotonic()
    answer()  # the slot is free again: held
    assert time.monotonic() - started >= 0.9


def test_a_pull_of_one_object_waits_for_that_object_and_is_not_woken_by_others():
    store: dict[str, bytes] = {}
    arrivals = Arrivals()

    def put(object_id: str, content: bytes) -> None:
        store[object_id] = content

    asked: list[str] = []

    def pull_object(request: types.SimpleNamespace) -> bytes:
        asked.append(request.object_id)
        return store.get(request.object_id, b"")

    put = announcing(put, arrivals, key="object_id")
    pull = held(pull_object, lambda content: content == b"", arrivals, 5.0, 4, key=lambda request: request.object_id)
    for other in ("b", "c", "d"):
        threading.Timer(0.1, put, args=(other, b"other")).start()
    threading.Timer(0.4, put, args=("a", b"mine")).start()
    started = time.monotonic()
    assert pull(types.SimpleNamespace(object_id="a")) == b"mine"
    assert 0.35 <= time.monotonic() - started < 2.0
    assert asked == ["a", "a"]  # asked once, then once more when its own object came: no re-asking per upload


def test_the_empty_answers_of_flowers_endpoints_are_recognised():
    assert no_messages(PullMessagesResponse())
    assert still_uploading(PullObjectResponse(object_found=True, object_available=False))
    assert not still_uploading(PullObjectResponse(object_found=False, object_available=False))  # unknown: no wait
    assert not still_uploading(PullObjectResponse(object_found=True, object_available=True, object_content=b"x"))
    assert HOLD_S < 30  # Flower's HTTP client gives a request 30 s (flwr.supercore.protobuf.client)


def test_superlink_launcher_holds_flowers_message_and_object_pulls():
    """The premise: Flower's routers call these handlers through their modules, and the states store through these."""
    import flwr.superlink.servicer.fleet.fleet_handlers as fleet
    import flwr.superlink.servicer.runtime.runtime_handlers as runtime
    from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState
    from flwr.server.superlink.linkstate.sql_linkstate import SqlLinkState

    from deploy.coordinator.superlink_launcher import hold_polls

    copies = [types.ModuleType(m.__name__) for m in (fleet, runtime)]
    for copy, module in zip(copies, (fleet, runtime), strict=True):
        copy.pull_messages, copy.pull_object = module.pull_messages, module.pull_object
    states = [type("Sql", (SqlLinkState,), {}), type("Memory", (InMemoryLinkState,), {})]
    assert hold_polls(*copies, states)
    assert copies[0].pull_messages is not fleet.pull_messages and copies[1].pull_object is not runtime.pull_object
    assert states[0].store_object is not SqlLinkState.store_object
    assert not hold_polls(types.ModuleType("moved"), copies[1], states)


def test_supernode_launcher_holds_superexecs_task_poll_and_a_tasks_object_pull():
    import flwr.supernode.servicer.runtime.runtime_handlers as handlers
    from flwr.supercore.object_store.in_memory_object_store import InMemoryObjectStore
    from flwr.supernode.nodestate.in_memory_nodestate import InMemoryNodeState

    from deploy.site.supernode_launcher import hold_task_polls

    copy = types.ModuleType(handlers.__name__)
    copy.acquire_task, copy.pull_object = handlers.acquire_task, handlers.pull_object
    state, store = type("State", (InMemoryNodeState,), {}), type("Store", (InMemoryObjectStore,), {})
    assert hold_task_polls(copy, state, store)
    assert copy.acquire_task is not handlers.acquire_task and state.create_task is not InMemoryNodeState.create_task
    assert not hold_task_polls(types.ModuleType("moved"), state, store)


@pytest.mark.parametrize("module", ["flwr.superlink.routers.fleet.router", "flwr.supercore.routers.runtime.router"])
def test_flowers_routers_look_their_handlers_up_at_each_request(module):
    """Replacing a handler on its module works only if the router does not hold its own reference."""
    import importlib
    import inspect

    source = inspect.getsource(importlib.import_module(module))
    assert "fleet_handlers.pull_messages(" in source or "handlers.pull_messages(request" in source
    assert "from flwr.superlink.servicer.fleet.fleet_handlers import" not in source
