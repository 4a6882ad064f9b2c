"""The round loop under faults: the real ServerApp and ClientApp, faults injected by the stub Grid.

These are fast checks of the coordinator's own handling (deadlines, dropouts at each SecAgg+ stage,
quorum waits and retries, refused updates, a resumed run's bookkeeping). The same faults on real
processes, by signal and packet drop, are in test_fault_federation.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message

from common.message_envelope import is_enveloped, opened
from common.packed_arrays import has_packed, pack_record, unpacked
from common.protocol import NEXT_ROUND_RECORD
from common.run_record import RunRecord, checkpoint_path, latest_checkpoint, load_checkpoint, resume_point
from common.settings import RunSettings
from deploy.in_process.federation import FIRST_NODE_ID, run_in_process, site_grid
from deploy.in_process.grid import stage_of
from harness.federation import write_sphere_site
from server.presence import Presence, QuorumLost

SITES = ("site-a", "site-b", "site-c")
SITE_B = FIRST_NODE_ID + 1
SITE_C = FIRST_NODE_ID + 2


def settings(mode: str = "secagg+", rounds: int = 2, round_timeout_s: float = 10, **faults: float) -> RunSettings:
    return RunSettings.model_validate(
        {
            "rounds": rounds,
            "min_sites": 2,
            "round_timeout_s": round_timeout_s,
            "model": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1},
            "training": {"local_steps": 2, "patch_size": 32, "mixed_precision": False},
            "aggregation": {"mode": mode},
            "faults": {"straggler_grace_s": 0.3, "stage_timeout_s": 5, "quorum_wait_s": 3, **faults},
        }
    )


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sites")
    return {site: write_sphere_site(root / site, 10 * index, train=2, val=1) for index, site in enumerate(SITES)}


def consistent(record: RunRecord, rounds: int) -> list[dict]:
    """Every round once, in order; each checkpoint carries exactly its metrics row."""
    rows = record.rounds()
    assert [row["round"] for row in rows] == list(range(1, rounds + 1))
    for row in rows:
        saved = load_checkpoint(checkpoint_path(record.run_dir, row["round"]))
        assert saved.round == row["round"] and saved.metrics["global_dice"] == row["global_dice"]
        assert math.isfinite(row["global_dice"])
    assert record.read()["rounds_done"] == rounds
    return rows


@pytest.mark.parametrize("stage", ["setup", "share-keys", "masked-update", "unmask"])
def test_secure_round_completes_without_a_site_lost_at_any_stage(stage, folders, tmp_path):
    run = settings("secagg+")
    grid = site_grid(tmp_path / "run", run, folders, drop_at={SITE_B: stage})
    record = run_in_process(tmp_path / "run", run, grid)
    assert record.read()["status"] == "completed"
    first, second = consistent(record, 2)
    assert first["dropped"] == {"site-b": stage}
    assert first["failures"]["site-b"].startswith(f"dropped at {stage}: no secure aggregation {stage} stage reply")
    # lost before its masked update was in: left out of the sum; lost while unmasking: it is in
    assert ("site-b" in first["sites"]) == (stage == "unmask")
    assert second["dropped"] == {"site-b": "setup"} and set(second["sites"]) == {"site-a", "site-c"}


def as_read(reply: Message) -> Message:
    """``reply`` with its content out of the envelope it travels in, as the coordinator reads it."""
    if reply.has_content():
        reply.content = opened(reply.content, "test")
    return reply


def _stages(grid) -> list[tuple[str, str, bool]]:
    """(round, stage, carries the next round's stage) of every message the coordinator sent, once per kind."""
    seen = []
    for message in grid.delivered:
        if message.metadata.message_type != "train":
            continue
        content = opened(message.content, "the coordinator")  # as the site reads it
        kind = (message.metadata.group_id, stage_of(message), NEXT_ROUND_RECORD in content.config_records)
        if kind not in seen:
            seen.append(kind)
    return seen


def test_secure_rounds_after_the_first_carry_their_key_exchange_in_the_round_before(folders, tmp_path):
    run = settings("secagg+", rounds=3)
    grid = site_grid(tmp_path / "run", run, folders)
    record = run_in_process(tmp_path / "run", run, grid)
    assert [set(row["sites"]) for row in consistent(record, 3)] == [set(SITES)] * 3
    assert _stages(grid) == [
        ("1", "setup", False),
        ("1", "share-keys", False),
        ("1", "masked-update", True),  # with round 2's set-up
        ("1", "unmask", True),  # with round 2's key shares
        ("2", "masked-update", True),
        ("2", "unmask", True),
        ("3", "masked-update", False),  # the last round keys no next one
        ("3", "unmask", False),
    ]


def test_a_site_that_does_not_carry_the_next_rounds_keys_costs_a_key_exchange_not_a_round(folders, tmp_path):
    """A reply without the next round's part (e.g. a site whose app predates it): that round keys afresh."""

    def without_next_round(reply: Message) -> Message:
        reply = as_read(reply)
        if reply.has_content() and NEXT_ROUND_RECORD in reply.content.config_records:
            del reply.content.config_records[NEXT_ROUND_RECORD]
        return reply

    run = settings("secagg+", rounds=2)
    grid = site_grid(tmp_path / "run", run, folders, tamper={SITE_B: without_next_round})
    record = run_in_process(tmp_path / "run", run, grid)
    rows = consistent(record, 2)
    assert [set(row["sites"]) for row in rows] == [set(SITES)] * 2 and not rows[0]["failures"]
    assert ("2", "setup", False) in _stages(grid) and ("2", "share-keys", False) in _stages(grid)


def test_under_secagg_a_quick_score_of_the_incoming_model_comes_with_the_unmasking_reply(folders, tmp_path):
    run = settings("secagg+", rounds=3)
    grid = site_grid(tmp_path / "run", run, folders)
    replies: list[Message] = []
    grid.tamper[SITE_C] = lambda reply: replies.append(as_read(reply)) or reply
    record = run_in_process(tmp_path / "run", run, grid)
    rows = consistent(record, 3)
    assert all("dice" in site for row in rows for site in row["sites"].values())
    carried = {(r.metadata.group_id, "metrics" in r.content.metric_records) for r in replies if r.metadata.group_id}
    # Round 2 scores round 1's model before training (the run's first scoring: its time unknown);
    # round 3 scores round 2's model after its masked update left, and the unmasking reply carries it.
    assert ("2", True) not in carried and ("3", True) in carried


def test_a_score_missing_from_an_unmasking_reply_is_named_and_the_round_goes_on(folders, tmp_path):
    run = settings("secagg+", rounds=3)
    grid = site_grid(tmp_path / "run", run, folders)

    def lose_the_score(reply: Message) -> Message:
        reply = as_read(reply)
        if reply.metadata.group_id == "3" and "metrics" in reply.content.metric_records:
            del reply.content["metrics"]
        return reply

    grid.tamper[SITE_B] = lose_the_score
    record = run_in_process(tmp_path / "run", run, grid)
    second = consistent(record, 3)[1]
    assert "dice" not in second["sites"]["site-b"] and second["failures"]["site-b"].startswith("scoring: site-b")
    assert all("dice" in second["sites"][site] for site in ("site-a", "site-c"))


def test_plain_round_drops_a_straggler_after_the_grace(folders, tmp_path):
    run = settings("plain", round_timeout_s=120)
    grid = site_grid(tmp_path / "run", run, folders, silent={SITE_C})
    record = run_in_process(tmp_path / "run", run, grid)
    first, _ = consistent(record, 2)
    assert first["dropped"] == {"site-c": "training"}
    assert "dropped as a straggler" in first["failures"]["site-c"]
    assert first["train_exchange_s"] < 60  # ended by the grace, not at the stage's 120 s limit


def test_a_round_below_quorum_is_tried_again(folders, tmp_path):
    run = settings("plain")
    grid = site_grid(tmp_path / "run", run, folders, ignore_next={SITE_B: 1, SITE_C: 1})
    record = run_in_process(tmp_path / "run", run, grid)
    first, second = consistent(record, 2)
    assert first["attempts"] == 2 and "1 of 3 sites replied, 2 needed" in first["earlier_attempts"][0]
    assert set(first["sites"]) == set(SITES) and second["attempts"] == 1


def test_a_round_waits_for_quorum_and_goes_on_when_sites_return(folders, tmp_path):
    run = settings("secagg+", quorum_wait_s=30)
    grid = site_grid(tmp_path / "run", run, folders, offline_polls={SITE_B: 2, SITE_C: 2})
    record = run_in_process(tmp_path / "run", run, grid)
    assert record.read()["status"] == "completed"
    assert set(consistent(record, 2)[0]["sites"]) == set(SITES)


def test_too_long_below_quorum_pauses_the_run_with_its_reason(folders, tmp_path):
    run = settings("secagg+", quorum_wait_s=1.5)
    grid = site_grid(tmp_path / "run", run, folders, offline={SITE_B, SITE_C})
    record = run_in_process(tmp_path / "run", run, grid)
    status = record.read()
    assert status["status"] == "paused" and not status.get("failure")
    assert "round 1 waited" in status["paused"] and "1 sites online, 2 needed" in status["paused"]
    state = record.state()
    assert state is not None and state["phase"] == "paused" and state["detail"] == status["paused"]
    assert record.rounds() == []


def _poisoned(how: str):
    """A site's reply as a modified site would send it: its weights changed, packed and enveloped as on the wire."""

    def tamper(reply: Message) -> Message:
        if reply.has_error():
            return reply
        assert is_enveloped(reply.content)  # what travels is one object
        if how == "envelope":
            (envelope,) = reply.content.config_records.values()
            envelope["content"] = bytes(envelope["content"])[:-7]  # a truncated transfer
            return reply
        reply = as_read(reply)
        if "arrays" not in reply.content.array_records:
            return reply  # an evaluation reply: nothing to poison
        assert has_packed(reply.content)  # its weights one packed array
        if how == "packing":
            (packing,) = reply.content["arrays"].values()
            packing.data = packing.data[:-7]
            return reply
        arrays = unpacked(reply.content, "test")["arrays"]
        name = next(iter(arrays))
        values = arrays[name].numpy().copy()
        if how == "nan":
            values.flat[0] = np.nan
        elif how == "norm":
            values = values + 1e6
        else:
            values = values.reshape(-1)
        reply.content["arrays"] = pack_record(ArrayRecord({**{k: v for k, v in arrays.items()}, name: Array(values)}))
        return reply

    return tamper


@pytest.mark.parametrize(
    ("how", "reason"),
    [("nan", "NaN or infinite"), ("norm", "beyond max_update_norm"), ("shape", "the model's is")],
)
def test_a_malformed_update_is_refused_naming_the_site(how, reason, folders, tmp_path):
    run = settings("plain", rounds=1)
    grid = site_grid(tmp_path / "run", run, folders, tamper={SITE_C: _poisoned(how)})
    record = run_in_process(tmp_path / "run", run, grid)
    (row,) = consistent(record, 1)
    assert row["failures"]["site-c"].startswith("update refused:") and reason in row["failures"]["site-c"]
    assert row["dropped"] == {"site-c": "training (update refused)"} and "site-c" not in {
        site for site, scores in row["sites"].items() if "num_train" in scores
    }
    weights = load_checkpoint(latest_checkpoint(record.run_dir)).weights
    assert all(bool(tensor.isfinite().all()) for tensor in weights.values())


@pytest.mark.parametrize(
    ("cut", "words"), [("packing", "malformed packed weights"), ("envelope", "malformed message envelope")]
)
def test_an_update_cut_short_drops_the_site_and_the_round_goes_on(cut, words, folders, tmp_path):
    run = settings("plain", rounds=1)
    grid = site_grid(tmp_path / "run", run, folders, tamper={SITE_C: _poisoned(cut)})
    record = run_in_process(tmp_path / "run", run, grid)
    (row,) = consistent(record, 1)
    assert words in row["failures"]["site-c"], row["failures"]
    assert "site-c" in row["dropped"] and "site-c" not in {
        site for site, scores in row["sites"].items() if "num_train" in scores
    }
    weights = load_checkpoint(latest_checkpoint(record.run_dir)).weights
    assert all(bool(tensor.isfinite().all()) for tensor in weights.values())


def test_a_resumed_run_redoes_at_most_the_round_in_flight(folders, tmp_path):
    """The coordinator dies in round 3's training; the resumed run continues from round 2."""
    run = settings("secagg+", rounds=4)
    crashing = site_grid(tmp_path / "run", run, folders, crash_in_round=3)
    with pytest.raises(SystemExit):
        run_in_process(tmp_path / "run", run, crashing)
    record = RunRecord(tmp_path / "run")
    assert record.read()["status"] == "running" and [r["round"] for r in record.rounds()] == [1]
    _, done, checkpoint = resume_point(tmp_path / "run")
    assert done == 2  # round 2 was aggregated and checkpointed, its scores were still to come
    resumed = site_grid(tmp_path / "run", run, folders)
    run_in_process(tmp_path / "run", run, resumed, round_offset=done, initial_weights=checkpoint)
    assert record.read()["status"] == "completed"
    consistent(record, 4)


class _Nodes:
    """Flower's Grid as Presence asks it: who is online now, from a script of polls."""

    def __init__(self, polls: list[set[str]]) -> None:
        self.polls = polls

    def get_nodes(self):
        from types import SimpleNamespace

        names = self.polls.pop(0) if len(self.polls) > 1 else self.polls[0]
        return [SimpleNamespace(node_id=index, name=name) for index, name in enumerate(sorted(names))]


def _presence(polls: list[set[str]], rejoin_wait_s: float) -> tuple[Presence, list[str]]:
    clock = iter(range(10_000))
    said: list[str] = []
    presence = Presence(
        _Nodes(polls),
        2,
        wait_s=100,
        known=SITES,
        rejoin_wait_s=rejoin_wait_s,
        on_wait=lambda round_number, message: said.append(message),
        clock=lambda: float(next(clock)),
        sleep=lambda seconds: None,
    )
    return presence, said


def test_a_site_of_the_last_round_is_waited_for_once_and_joins_the_next_round():
    everyone, restarting = set(SITES), {"site-a", "site-c"}
    presence, said = _presence([everyone, restarting, restarting, everyone], rejoin_wait_s=30)
    assert set(presence.wait_for_quorum(1).values()) == everyone
    assert set(presence.wait_for_quorum(2).values()) == everyone  # it came back within the wait
    assert len(said) == 1 and said[0].startswith("round 2 waits up to 30 s for site-b to rejoin")


def test_a_site_that_does_not_rejoin_in_time_is_not_waited_for_again():
    everyone, without_b = set(SITES), {"site-a", "site-c"}
    presence, said = _presence([everyone, without_b], rejoin_wait_s=5)
    assert set(presence.wait_for_quorum(1).values()) == everyone
    assert set(presence.wait_for_quorum(2).values()) == without_b  # the round went on after the wait
    waits = len(said)
    assert set(presence.wait_for_quorum(3).values()) == without_b and len(said) == waits  # no second wait


def test_a_wait_outside_training_names_its_work_not_a_round():
    presence, said = _presence([{"site-a"}], rejoin_wait_s=0)
    with pytest.raises(QuorumLost, match=r"^the statistics request waited 100 s for quorum: 1 sites online, 2 needed"):
        presence.wait_for_quorum(1, "the statistics request")
    assert said == [
        "the statistics request waits for quorum: 1 of 3 sites online, 2 needed; "
        "site-b not seen in this run; site-c not seen in this run"
    ]
