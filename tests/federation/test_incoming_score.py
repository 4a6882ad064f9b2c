"""The score of a round's incoming model, computed after the masked update left (client/incoming_score.py)."""

import threading
import time

from client.incoming_score import IncomingScore, incoming_metrics
from client.site import SiteContext


def scoring(tmp_path, round_number: int = 2) -> IncomingScore:
    site = SiteContext("site-a", tmp_path / "data", tmp_path / "cache", device="cpu", threads=1)
    return IncomingScore(site, run_id=7, round_number=round_number)


def test_only_scoring_known_to_be_quick_at_this_site_is_deferred(tmp_path, monkeypatch):
    first = scoring(tmp_path)
    assert not first.worth_deferring()  # the run's first scoring: its time is not known yet
    assert first.now(lambda: {"dice": 0.5}) == {"dice": 0.5}
    assert scoring(tmp_path, 3).worth_deferring()

    def slow() -> dict[str, float]:
        time.sleep(0.05)
        return {"dice": 0.6}

    monkeypatch.setattr("client.incoming_score.DEFER_UP_TO_S", 0.01)  # scoring here takes longer than that
    scoring(tmp_path, 3).now(slow)
    assert not scoring(tmp_path, 4).worth_deferring()


def test_the_unmasking_reply_waits_for_a_score_still_being_computed(tmp_path):
    release = threading.Event()

    def score() -> dict[str, float]:
        release.wait(5)
        return {"num-examples": 8.0, "dice": 0.7}

    scoring(tmp_path).after_reply(score)
    threading.Timer(0.3, release.set).start()
    started = time.monotonic()
    assert scoring(tmp_path).collect() == {"num-examples": 8.0, "dice": 0.7}
    assert 0.25 <= time.monotonic() - started < 3
    assert scoring(tmp_path).collect() is None  # handed over once: the file is gone


def test_a_round_whose_score_was_not_deferred_adds_nothing(tmp_path):
    assert scoring(tmp_path).collect(wait_s=5) is None


def test_a_failed_or_late_score_is_left_out_and_the_reply_goes(tmp_path, caplog):
    def broken() -> dict[str, float]:
        raise RuntimeError("volume unreadable")

    scoring(tmp_path).after_reply(broken)
    assert scoring(tmp_path).collect() is None
    assert "volume unreadable" in caplog.text and "site-a" in caplog.text

    late = threading.Event()
    scoring(tmp_path, 3).after_reply(lambda: (late.wait(5), {"dice": 0.1})[1])
    started = time.monotonic()
    assert scoring(tmp_path, 3).collect(wait_s=0.3) is None
    assert time.monotonic() - started < 2 and "not ready in time" in caplog.text
    assert not scoring(tmp_path, 4).worth_deferring()  # the next round scores before training
    late.set()


def test_a_score_travels_as_incoming_metrics():
    assert incoming_metrics({"num-examples": 8.0, "dice": 0.5}) == {"incoming-num-examples": 8.0, "incoming-dice": 0.5}
