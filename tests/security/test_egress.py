"""Issue 4 point 5: the egress guard refuses what a site must not send; the ledger shows tampering.

The guard is exercised on real Flower records and through the site's real ClientApp (the one the
SuperNode runs), on a real synthetic site; the federation-level check (every reply the
coordinator received is in the sites' ledgers) is in test_secure_aggregation.py.
"""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np
import pytest
import torch
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    Metadata,
    MetricRecord,
    RecordDict,
)
from flwr.common.serde import recorddict_to_proto
from typer.testing import CliRunner

from client import local_round
from client.app import app as site_app
from client.egress import ALLOWED_METRICS, EgressRefused, check_reply, model_spec
from client.ledger import Ledger
from client.site import SiteContext
from common.message_envelope import enveloped, is_enveloped, opened, sealed
from common.model import build_model
from common.packed_arrays import has_packed, packed
from common.protocol import RUN_KEY
from common.settings import ModelSettings, RunSettings, to_run_config
from deploy.demo.synthetic_sites import DEMO_SITES, write_site
from insite.cli import app as insite

MODEL = ModelSettings.model_validate({"channels": [4, 8, 16], "strides": [2, 2]})
SITE = "site-a"


def _weights() -> dict[str, torch.Tensor]:
    return build_model(MODEL).state_dict()


def _reply(weights: dict | None = None, metrics: dict | None = None, **records) -> RecordDict:
    content = RecordDict(
        {
            "arrays": ArrayRecord(weights if weights is not None else _weights()),
            "metrics": MetricRecord(metrics or {"num-examples": 4.0, "train-loss": 0.5}),
            "site": ConfigRecord({"name": SITE}),
        }
    )
    for key, record in records.items():
        content[key] = record
    return content


def test_model_spec_comes_from_the_settings_not_the_message():
    spec = model_spec(MODEL)
    real = _weights()
    assert list(spec) == list(real)
    assert all(spec[name] == (tuple(t.shape), "float32") for name, t in real.items())


def test_a_normal_round_reply_passes():
    check_reply(_reply(), MODEL, SITE)
    evaluation = RecordDict(
        {"metrics": MetricRecord({"dice": 0.7, "num-examples": 3.0}), "site": ConfigRecord({"name": SITE})}
    )
    check_reply(evaluation, MODEL, SITE)


def _tampered(name: str) -> RecordDict:
    weights = _weights()
    first = next(iter(weights))
    if name == "extra tensor":
        weights["leak"] = torch.rand(4, 16, 16, 16)
    elif name == "missing tensor":
        del weights[first]
    elif name == "reshaped tensor":
        weights[first] = weights[first].reshape(-1)
    elif name == "float64 tensor":
        weights[first] = weights[first].double()
    elif name == "nan":
        weights[first][..., 0] = float("nan")
    elif name == "per-case list":
        return _reply(metrics={"num-examples": 2.0, "dice": [0.1, 0.9]})
    elif name == "unknown metric":
        return _reply(metrics={"num-examples": 2.0, "case-17-dice": 0.4})
    elif name == "infinite metric":
        return _reply(metrics={"num-examples": 2.0, "train-loss": float("inf")})
    elif name == "file path":
        return _reply(notes=ConfigRecord({"path": "/data/site-a/images/patient-0042.nii.gz"}))
    elif name == "other site's name":
        content = _reply()
        content["site"] = ConfigRecord({"name": "site-b"})
        return content
    elif name == "second array record":
        return _reply(extra=ArrayRecord({"x": Array(np.zeros(3, dtype=np.float32))}))
    return _reply(weights)


@pytest.mark.parametrize(
    "name",
    [
        "extra tensor",
        "missing tensor",
        "reshaped tensor",
        "float64 tensor",
        "nan",
        "per-case list",
        "unknown metric",
        "infinite metric",
        "file path",
        "other site's name",
        "second array record",
    ],
)
def test_anything_else_is_refused(name):
    with pytest.raises(EgressRefused):
        check_reply(_tampered(name), MODEL, SITE)


def test_the_legacy_layout_secaggplus_masks_is_checked_by_position():
    arrays = [t.numpy() for t in _weights().values()]
    legacy = RecordDict(
        {
            "fitres.parameters": ArrayRecord({str(i): Array(a) for i, a in enumerate(arrays)}),
            "fitres.metrics": ConfigRecord({"num-examples": 4.0, "site": SITE}),
            "fitres.num_examples": MetricRecord({"num_examples": 4}),
            "fitres.status": ConfigRecord({"code": 0, "message": "Success"}),
        }
    )
    check_reply(legacy, MODEL, SITE)
    legacy["fitres.parameters"] = ArrayRecord({str(i): Array(a) for i, a in enumerate(arrays[::-1])})
    with pytest.raises(EgressRefused, match="tensor 0"):
        check_reply(legacy, MODEL, SITE)
    legacy["fitres.parameters"] = ArrayRecord()  # what secaggplus_mod leaves once it has masked
    legacy["fitres.metrics"] = ConfigRecord({"num-examples": 4.0, "site": SITE, "ids": "P-0042"})
    with pytest.raises(EgressRefused, match="'ids'"):
        check_reply(legacy, MODEL, SITE)
    with pytest.raises(EgressRefused, match="outside the protocol"):
        check_reply(RecordDict({"secaggplus_configs": ConfigRecord({"pk1": b"k", "x": b"data"})}), MODEL, SITE)


def test_allow_list_has_no_per_case_or_text_fields():
    assert ALLOWED_METRICS >= {"num-examples", "dice", "incoming-dice", "train-loss"}
    assert not any("case" in name or "path" in name or "id" == name for name in ALLOWED_METRICS)


@pytest.fixture
def site(tmp_path):
    data = tmp_path / "data"
    write_site(DEMO_SITES[0], data, train_cases=1, val_cases=1, size=16)
    context = SiteContext(SITE, data, tmp_path / "cache", "cpu", 1)
    settings = RunSettings.model_validate(
        {"model": MODEL.model_dump(), "training": {"patch_size": 16, "batch_size": 1}}
    )
    return context, settings


def _call(
    context: SiteContext,
    settings: RunSettings,
    message_type: str,
    config: dict | None = None,
    pack: bool = False,
    envelope: bool = False,
    sent: RecordDict | None = None,
) -> Message:
    flower_context = Context(
        run_id=7,
        node_id=1,
        node_config={
            "site-name": context.name,
            "data-path": str(context.data_path),
            "cache-path": str(context.cache_path),
            "device": "cpu",
            "threads": 1,
        },
        state=RecordDict(),
        run_config=to_run_config(settings, context.cache_path / "run"),
    )
    content = (
        RecordDict({"arrays": ArrayRecord(_weights()), "config": ConfigRecord(config or {})}) if sent is None else sent
    )
    if pack:  # as insite's coordinator sends it (server/packed_grid.py)
        content = packed(content)
    if envelope:
        content = enveloped(content)
    # As the SuperLink delivers it (metadata set by the coordinator's side).
    incoming = Message(
        metadata=Metadata(
            run_id=7,
            message_id="m1",
            src_node_id=0,
            dst_node_id=1,
            reply_to_message_id="",
            group_id="3",
            created_at=time.time(),
            ttl=600,
            message_type=message_type,
        ),
        content=content,
    )
    return site_app(incoming, flower_context)


def test_the_site_app_refuses_and_ledgers_a_leaking_reply(site, monkeypatch):
    context, settings = site
    reply = _call(context, settings, "evaluate")
    assert not reply.has_error(), reply.error
    entry = Ledger(context.cache_path).entries()[-1]
    assert (entry["kind"], entry["run"], entry["round"]) == ("evaluate", 7, 3)
    sent = recorddict_to_proto(reply.content).SerializeToString()
    assert entry["sha256"] == hashlib.sha256(sent).hexdigest() and entry["bytes"] == len(sent)
    assert "dice=" in entry["detail"]

    def leaking_evaluate(self, weights):  # a site's training code gone wrong
        return {"num-examples": 1.0, "dice": 0.5, "case-dice": [0.5]}

    monkeypatch.setattr(local_round.SiteRound, "evaluate", leaking_evaluate)
    reply = _call(context, settings, "evaluate")
    assert reply.has_error() and "egress guard refused" in reply.error.reason
    assert "case-dice" in reply.error.reason
    refusal = Ledger(context.cache_path).entries()[-1]
    assert refusal["kind"] == "refused" and "case-dice" in refusal["detail"]
    assert Ledger(context.cache_path).verify().intact


def test_the_ledger_records_a_packed_reply_as_it_leaves_and_describes_its_tensors(site):
    context, settings = site
    reply = _call(context, settings, "train", {"server-round": 1, RUN_KEY: "ab" * 16}, pack=True)
    assert not reply.has_error(), reply.error
    assert has_packed(reply.content)  # what leaves: the weights as one object
    entry = Ledger(context.cache_path).entries()[-1]
    sent = recorddict_to_proto(reply.content).SerializeToString()
    assert entry["sha256"] == hashlib.sha256(sent).hexdigest() and entry["bytes"] == len(sent)
    tensors = len(_weights())
    assert f"model weights: {tensors} tensors" in entry["detail"], entry["detail"]


def test_an_enveloped_message_is_answered_as_one_object_made_of_the_bytes_the_ledger_records(site):
    context, settings = site
    reply = _call(context, settings, "train", {"server-round": 1, RUN_KEY: "ab" * 16}, pack=True, envelope=True)
    assert not reply.has_error(), reply.error
    assert is_enveloped(reply.content)  # what leaves: message, record dict, envelope
    (envelope,) = reply.content.config_records.values()
    entry = Ledger(context.cache_path).entries()[-1]
    assert entry["sha256"] == hashlib.sha256(envelope["content"]).hexdigest()
    assert entry["bytes"] == len(envelope["content"])
    inside = opened(reply.content, "site-a")
    assert has_packed(inside) and set(inside) == {"arrays", "metrics", "site"}
    assert f"model weights: {len(_weights())} tensors" in entry["detail"], entry["detail"]
    assert Ledger(context.cache_path).verify().intact


def test_an_envelope_the_site_cannot_open_is_refused_and_ledgered(site):
    context, settings = site
    broken = sealed(b"\xff\xff not a record dict")
    reply = _call(context, settings, "train", sent=broken)
    assert reply.has_error() and "the coordinator: malformed message envelope" in reply.error.reason
    entry = Ledger(context.cache_path).entries()[-1]
    assert entry["kind"] == "error" and "malformed message envelope" in entry["detail"]


def _ledger_with(tmp_path, count=5) -> Ledger:
    ledger = Ledger(tmp_path)
    for number in range(count):
        ledger.append(
            run=1,
            round_number=number,
            kind="train",
            payload=bytes([number]) * 10,
            detail=f"model weights, round {number}",
        )
    return ledger


def _lines(ledger: Ledger) -> list[str]:
    return ledger.path.read_text().splitlines()


def _rewrite(ledger: Ledger, lines: list[str]) -> None:
    ledger.path.write_text("".join(line + "\n" for line in lines))


def test_ledger_chain_and_private_file(tmp_path):
    ledger = _ledger_with(tmp_path)
    check = ledger.verify()
    assert check.intact and check.entries == 5
    entries = ledger.entries()
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5]
    assert all(b["prev"] == a["hash"] for a, b in zip(entries, entries[1:], strict=False))
    assert entries[0]["sha256"] == hashlib.sha256(bytes([0]) * 10).hexdigest()
    assert ledger.path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    "tamper, expected",
    [
        ("edit", "was edited"),
        ("delete", "deleted, inserted or moved"),
        ("reorder", "deleted, inserted or moved"),
        ("truncate", "removed from the end"),
        ("garbage", "not a ledger entry"),
    ],
)
def test_ledger_verify_detects_tampering(tmp_path, tamper, expected):
    ledger = _ledger_with(tmp_path)
    lines = _lines(ledger)
    if tamper == "edit":
        entry = json.loads(lines[2])
        entry["bytes"] = 1
        lines[2] = json.dumps(entry, sort_keys=True)
    elif tamper == "delete":
        del lines[1]
    elif tamper == "reorder":
        lines[1], lines[2] = lines[2], lines[1]
    elif tamper == "truncate":
        lines = lines[:-1]
    else:
        lines.insert(3, "{not json")
    _rewrite(ledger, lines)
    check = ledger.verify()
    assert not check.intact
    assert any(expected in problem for problem in check.problems), check.problems


def test_ledger_cli(tmp_path):
    ledger = _ledger_with(tmp_path, 3)
    runner = CliRunner()
    shown = runner.invoke(insite, ["site", "ledger", "show", "--cache", str(tmp_path)])
    assert shown.exit_code == 0 and "3 messages, 30 bytes" in shown.output
    as_json = runner.invoke(insite, ["site", "ledger", "show", "--cache", str(tmp_path), "--json"])
    shown_entries = [json.loads(line) for line in as_json.output.splitlines()]
    assert [(e["seq"], e["detail"]) for e in shown_entries][-1] == (3, "model weights, round 2")
    assert runner.invoke(insite, ["site", "ledger", "verify", "--cache", str(tmp_path)]).exit_code == 0
    lines = _lines(ledger)
    _rewrite(ledger, [lines[0], lines[2]])
    broken = runner.invoke(insite, ["site", "ledger", "verify", "--cache", str(tmp_path)])
    assert broken.exit_code == 1 and "NOT intact" in broken.output and "entry 3" in broken.output
