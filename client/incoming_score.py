"""Under SecAgg+, a site scores the model it received after its masked update has left, not before training.

Why. Each round's training message also asks the site to score the incoming model on its
held-out cases (client.local_round), and the coordinator files that score under the previous
round. Done before training, the scoring of the slowest site is part of every round's wall time
(0.3-0.5 s of a 9 s demo round here, issue 14). Under SecAgg+ the same site answers a second
message in the round, the unmasking request, which comes while the coordinator collects the
other sites' updates and starts their unmasking: the score can ride in that reply instead, and
the site computes it in the meantime.

How. The training task trains, sends its masked update, and scores the incoming model in a
thread that outlives the reply (a task ends when its threads do: Flower's exit grace of 5 s
bounds it, deploy/site/warm_clientapp.py waits as an interpreter would). The score goes to a file
in the site's cache, named by run and round; :func:`incoming_score_mod` adds it to the unmasking
reply, which passes the egress guard and the ledger like every reply. Only scoring that has
taken at most :data:`DEFER_UP_TO_S` at this site in this run is deferred, so it ends well within
that grace; the run's first scoring, any that takes longer (large volumes on a CPU) and any after
one that was not ready in time is done before training, as in plain mode. A score that is not
there when the unmasking request comes (the thread failed or was too slow: the site's log says)
leaves the round's row without that site's score, and the coordinator says so.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from typing import cast

from flwr.app import Context, Message, MetricRecord, MetricRecordValues
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage

from client.host_memory import kept_while_computing
from client.site import SiteContext
from common.files import atomic_write
from common.protocol import INCOMING_PREFIX

log = logging.getLogger(__name__)

#: Scoring that took at most this long at this site is done after the reply (Flower gives a
#: task 5 s to end after it; flwr.supercore.constant.FORCE_EXIT_TIMEOUT_SECONDS).
DEFER_UP_TO_S = 2.0
#: How long the unmasking reply waits for a score still being computed: past Flower's exit grace
#: the scoring thread is gone.
COLLECT_WAIT_S = 6.0
_POLL_S = 0.02
_FOLDER = "incoming-scores"

Scores = dict[str, float]


class IncomingScore:
    """The score of round ``round_number``'s incoming model at a site, kept until its unmasking reply leaves."""

    def __init__(self, site: SiteContext, run_id: int, round_number: int) -> None:
        folder = site.cache_path / _FOLDER
        self.path = folder / f"run-{run_id}-round-{round_number}.json"
        self._seconds = folder / f"run-{run_id}-seconds.json"  # how long this run's last scoring took here
        self.site = site.name
        self.round_number = round_number

    def worth_deferring(self) -> bool:
        """Whether the last scoring in this run took at most :data:`DEFER_UP_TO_S` (none yet: no)."""
        try:
            return float(json.loads(self._seconds.read_text())["seconds"]) <= DEFER_UP_TO_S
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def now(self, score: Callable[[], Scores]) -> Scores:
        """Score before training, as in plain mode, and remember how long it took."""
        started = time.monotonic()
        scores = score()
        self._remember(time.monotonic() - started)
        return scores

    def after_reply(self, score: Callable[[], Scores]) -> None:
        """Score in a thread that outlives this task's reply; the unmasking reply carries the result."""
        self._write({"pending": os.getpid()})  # before the masked update leaves, so the unmasking task waits

        def run() -> None:
            started = time.monotonic()
            try:
                with kept_while_computing():
                    scores = score()
            except Exception as error:  # the round goes on without this score; the site's log says why
                log.exception("site %s: scoring round %d's incoming model failed", self.site, self.round_number)
                self._write({"error": f"{type(error).__name__}: {error}"})
                return
            self._remember(time.monotonic() - started)
            self._write({"scores": scores})

        threading.Thread(target=run, name="insite: score the incoming model after the reply").start()

    def collect(self, wait_s: float = COLLECT_WAIT_S) -> Scores | None:
        """The score, once there (None: none was deferred for this round, or it failed or came too late)."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                state = json.loads(self.path.read_text())
            except FileNotFoundError:
                return None
            except (OSError, ValueError) as error:
                log.error("site %s: %s is unreadable (%s); no score for this round", self.site, self.path, error)
                return None
            if "pending" not in state or time.monotonic() >= deadline or not _alive(int(state["pending"])):
                self.path.unlink(missing_ok=True)
                if "scores" in state:
                    return {key: float(value) for key, value in state["scores"].items()}
                if "error" not in state:  # too slow for after the reply, or cut short: score before training
                    self._remember(math.inf)
                log.error(
                    "site %s: no score of round %d's incoming model (%s); the round goes without it",
                    self.site,
                    self.round_number,
                    state.get("error", "not ready in time"),
                )
                return None
            time.sleep(_POLL_S)

    def _remember(self, seconds: float) -> None:
        atomic_write(self._seconds, json.dumps({"seconds": seconds}).encode())

    def _write(self, state: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps(state).encode())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process with that number: not the scorer
        return False
    return True


def incoming_metrics(scores: Scores) -> Scores:
    """A score of the incoming model as a reply's metrics (``incoming-dice``...)."""
    return {f"{INCOMING_PREFIX}{key}": value for key, value in scores.items()}


def incoming_score_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Add the score of the round's incoming model, computed after the masked update left, to the unmasking reply."""
    configs = msg.content.config_records.get(RECORD_KEY_CONFIGS)  # before the protocol's mods consume it
    unmasking = configs is not None and configs.get(Key.STAGE) == Stage.UNMASK
    reply = call_next(msg, context)
    if not unmasking or reply.has_error():
        return reply
    site = SiteContext.from_node_config(context.node_config)
    scores = IncomingScore(site, msg.metadata.run_id, int(msg.metadata.group_id)).collect()
    if scores is not None:
        # cast: MetricRecord takes an invariant dict of any metric value, though it only reads (copies) it
        reply.content["metrics"] = MetricRecord(cast(dict[str, MetricRecordValues], incoming_metrics(scores)))
    return reply
