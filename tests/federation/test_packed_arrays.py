"""Model weights packed into one Flower object on the wire (common/packed_arrays.py), and a small message's
whole content one object (common/message_envelope.py): lossless, fewer objects."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.app.message.message import get_message_to_descendant_id_mapping
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.supercore.task_identity import TaskIdentity

from client.packing import packed_arrays_mod
from common.errors import FederationError
from common.message_envelope import ENVELOPE, enveloped, is_enveloped, opened, sealed, serialised
from common.model import build_model
from common.packed_arrays import PACKED_STYPE, has_packed, pack_record, packed, unpack_record, unpacked
from common.settings import ModelSettings


@pytest.fixture(autouse=True)
def as_the_coordinator() -> None:
    """Flower stamps every new Message with the sending process's identity, as in a ServerApp."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, SUPERLINK_NODE_ID, 1


def unet_record() -> ArrayRecord:
    return ArrayRecord(build_model(ModelSettings()).state_dict())


def objects_in(content: RecordDict) -> int:
    """How many objects Flower moves for a message with this content (each a request on the wire)."""
    message = Message(content, dst_node_id=1, message_type="train")
    return 1 + len(get_message_to_descendant_id_mapping(message)[message.object_id].object_ids)


def test_packing_gives_back_every_tensor_to_the_bit_and_as_the_same_objects():
    record = ArrayRecord(
        {
            "weight": Array(np.random.default_rng(0).standard_normal((3, 4, 5)).astype(np.float32)),
            "steps": Array(np.array(7, dtype=np.int64)),  # a 0-d tensor
            "empty": Array(np.zeros((0, 2), dtype=np.float16)),
            "mask": Array(torch.tensor([True, False])),
        }
    )
    wire = pack_record(record)
    assert list(wire) == ["packed"] and next(iter(wire.values())).stype == PACKED_STYPE
    back = unpack_record(wire, "site-a")
    assert list(back) == list(record)
    for name, array in record.items():
        assert back[name].object_id == array.object_id  # name, dtype, shape, type and bytes unchanged
        assert np.array_equal(back[name].numpy(), array.numpy())


def test_a_packed_model_is_a_handful_of_objects_not_one_per_tensor():
    model = unet_record()
    content = RecordDict({"arrays": model, "config": ConfigRecord({"server-round": 1})})
    assert len(model) > 20
    assert objects_in(content) > len(model)  # an Array and a chunk per tensor (equal chunks shared)
    assert objects_in(packed(content)) <= 6 + len(next(iter(pack_record(model).values())).slice_array())


def test_a_packed_message_survives_flowers_serialisation():
    content = packed(RecordDict({"arrays": unet_record(), "metrics": MetricRecord({"loss": 0.5})}))
    message = Message(content, dst_node_id=1, message_type="train")
    copy = message_from_proto(message_to_proto(message))
    assert copy.content["metrics"]["loss"] == 0.5
    before, after = unpacked(content, "x")["arrays"], unpacked(copy.content, "x")["arrays"]
    assert all(after[name].object_id == array.object_id for name, array in before.items())


@pytest.mark.parametrize(
    ("cut", "words"),
    [
        (lambda data: data[:-3], "describes"),
        (lambda data: data[:5], "malformed packed weights"),
        (lambda data: data[:8] + b"{not json" + data[17:], "malformed packed weights"),
        (lambda data: struct.pack("<Q", 9) + b'[{"a":1}]', "malformed packed weights"),  # entries not lists
        (lambda data: struct.pack("<Q", 20_000) + b"[" * 10_000 + b"]" * 10_000, "malformed packed weights"),
    ],
)
def test_a_malformed_packing_is_refused_naming_who_sent_it(cut, words):
    wire = pack_record(unet_record())
    (array,) = wire.values()
    array.data = cut(array.data)
    with pytest.raises(FederationError, match="site-b: malformed packed weights") as refused:
        unpack_record(wire, "site-b")
    assert words in str(refused.value)


def test_a_site_answers_packed_only_when_asked_packed():
    model = unet_record()

    def site(msg: Message, _context: Context) -> Message:
        assert not has_packed(msg.content) and len(msg.content["arrays"]) == len(model)  # the app sees tensors
        return Message(RecordDict({"arrays": msg.content["arrays"]}), reply_to=msg)

    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    for sent_packed in (True, False):
        content = RecordDict({"arrays": model})
        msg = Message(packed(content) if sent_packed else content, dst_node_id=1, message_type="train")
        reply = packed_arrays_mod(msg, context, site)
        assert has_packed(reply.content) is sent_packed


def test_a_small_message_travels_as_three_objects_and_comes_back_as_it_was_sent():
    content = packed(
        RecordDict(
            {
                "arrays": unet_record(),
                "metrics": MetricRecord({"loss": 0.5}),
                "config": ConfigRecord({"server-round": 3, "vectors": [b"\x00\x01", b"\x02"]}),
            }
        )
    )
    wire = enveloped(content)
    assert is_enveloped(wire) and objects_in(wire) == 3 < objects_in(content)
    assert enveloped(wire) is wire  # a message sent again is not enveloped twice
    copy = Message(wire, dst_node_id=1, message_type="train")
    back = opened(message_from_proto(message_to_proto(copy)).content, "site-a")
    assert list(back) == list(content)
    assert all(back[key].object_id == record.object_id for key, record in content.items())


def test_content_larger_than_a_chunk_travels_as_it_is():
    content = packed(RecordDict({"arrays": unet_record()}))
    size = len(next(iter(content["arrays"].values())).data)
    assert enveloped(content, limit=size // 2) is content  # the tensors alone exceed it: never serialised
    assert is_enveloped(enveloped(content, limit=size + 10_000))
    assert opened(content, "site-a") is content  # content that came without an envelope is read as it is


@pytest.mark.parametrize(
    "wire",
    [
        sealed(serialised(RecordDict({"config": ConfigRecord({"server-round": 1})}))[:-2]),  # cut short
        sealed(b"\xff\xff\xff"),
        RecordDict({ENVELOPE: ConfigRecord({"content": "not bytes"})}),
    ],
)
def test_a_malformed_envelope_is_refused_naming_who_sent_it(wire):
    with pytest.raises(FederationError, match="site-b: malformed message envelope"):
        opened(wire, "site-b")
