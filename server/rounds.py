"""The coordinator's round loop: train, aggregate, checkpoint, score, record; and ride through faults.

Flower's ``Strategy.start`` is close, but it would average whatever arrived (no quorum), log a
site's error without failing the round, number rounds from 1 on every resume, wait without limit
for nodes, and in 3 s steps for replies. This loop uses the strategy's own configure/aggregate
methods and adds: a bounded wait for a quorum of sites before each round (server/presence.py),
deadlines on every exchange (server/exchange.py), a round tried again when it ends below quorum,
updates checked before they are averaged (server/update_check.py), errors attributed to the site
that sent them, global round numbers across resumes, and a checkpoint and a metrics row after
every round. With ``sites_per_round`` set, each round trains a reproducible draw of that many of the
online sites (a consortium of many). What it does at each moment is in the run folder's ``state.json``.

A round's model is scored by the next round's replies (each site evaluates the model it receives
before training on it), so a round's checkpoint is written twice: when the round is aggregated
(what a resume continues from) and again when its scores arrive, so that every published
checkpoint carries its own evaluation.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from common.errors import FederationError
from common.privacy import gaussian_epsilon
from common.protocol import EVALUATE_INCOMING, INCOMING_PREFIX, RUN_KEY
from common.run_record import RunRecord, save_checkpoint
from common.settings import RunSettings
from server.exchange import Deadline, Exchange, exchange
from server.grid_wrapper import GridWrapper
from server.live_state import LiveState
from server.presence import BelowQuorum, Presence, QuorumLost
from server.secure import SecureTraining
from server.update_check import update_problem

log = logging.getLogger(__name__)
T = TypeVar("T")


def site_of(reply: Message) -> str:
    """The site's name as it reported it, else its Flower node id."""
    record = reply.content.config_records.get("site") if reply.has_content() else None
    return str(record["name"]) if record and "name" in record else f"node {reply.metadata.src_node_id}"


def metric(reply: Message, key: str) -> float:
    """One number a site reported; a reply without it, or with a list there, is the site's fault."""
    record = reply.content.metric_records.get("metrics")
    value = record.get(key) if record is not None else None
    if not isinstance(value, int | float):
        raise FederationError(f"{site_of(reply)}: its reply has no number '{key}' (got {value!r})")
    return float(value)


def _training_metrics_only(replies: list[Message]) -> list[Message]:
    """The replies without the scores of the incoming model (the previous round's, filed by then).

    The strategy averages metrics only when every reply has the same ones, and a site's score may
    be missing (not ready for its SecAgg+ unmasking reply) where its training metrics are not.
    """
    for reply in replies:
        metrics = reply.content.metric_records.get("metrics")
        if metrics is not None:
            for key in [k for k in metrics if k.startswith(INCOMING_PREFIX)]:
                del metrics[key]
    return replies


class OnlineNodes(GridWrapper):
    """The run's Grid, showing the strategy only the sites the round found online.

    Flower's strategies wait in ``sample_nodes`` for ``min_available_nodes`` without a limit; the
    loop has already waited (bounded) for a quorum, so the strategy samples from exactly those.
    """

    def __init__(self, grid: Grid, online: dict[int, str]) -> None:
        super().__init__(grid)
        self._online = list(online)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._online)


def drawn(online: dict[int, str], count: int, seed: int, round_number: int) -> dict[int, str]:
    """The ``count`` sites (all when 0) that train this round: a draw over site names, so reproducible."""
    if not count or count >= len(online):
        return online
    by_name = {name: node for node, name in online.items()}
    chosen = random.Random(f"{seed}/{round_number}").sample(sorted(by_name), count)
    return {by_name[name]: name for name in sorted(chosen)}


def in_dtypes_of(aggregated: ArrayRecord, sent: ArrayRecord) -> ArrayRecord:
    """The strategy's new model in the dtypes of the model it was sent.

    Flower's FedAdam and FedYogi scale their step by a NumPy float64 scalar, which under NumPy 2
    turns a float32 model into float64; the sites, rightly, refuse a global model whose tensors
    are not the network's (client.local_round), and every round after the first would fail.
    """
    return ArrayRecord(
        {name: Array(np.asarray(array.numpy(), dtype=sent[name].numpy().dtype)) for name, array in aggregated.items()}
    )


class RoundLoop:
    """Runs ``settings.rounds - round_offset`` rounds; global round = offset + local round."""

    def __init__(
        self,
        grid: Grid,
        strategy: Strategy,
        settings: RunSettings,
        record: RunRecord,
        round_offset: int = 0,
        secure: SecureTraining | None = None,
        state: LiveState | None = None,
        presence: Presence | None = None,
    ) -> None:
        self.grid = grid
        self.secure = secure
        self.strategy = strategy
        self.settings = settings
        self.faults = settings.faults
        self.record = record
        self.run_key = record.run_key()
        self.round_offset = round_offset
        self.state = state or LiveState(record)
        self.presence = presence or Presence(
            grid,
            settings.min_sites,
            self.faults.quorum_wait_s,
            known=record.read().get("sites", []),
            rejoin_wait_s=self.faults.rejoin_wait_s,
            on_wait=lambda round_number, message: self.state.set("waiting", round=round_number, detail=message),
        )

    def run(self, arrays: ArrayRecord, pending: dict | None = None) -> ArrayRecord:
        """Train the remaining rounds; ``pending`` is a checkpointed round still without Dice.

        Each round's training message also scores the model it carries, so a round's row is
        completed by the next round's replies; a final evaluate exchange scores the last model.
        """
        for local_round in range(1, self.settings.rounds - self.round_offset + 1):
            arrays, pending = self.one_round(local_round, arrays, pending)
        if pending is not None:
            self._final_evaluation(arrays, pending)
        return arrays

    def _attempts(self, round_number: int, attempt: Callable[[dict[int, str], int, list[str]], T]) -> T:
        """``attempt(online, number, earlier)`` until one reaches quorum, ``round_attempts`` at most."""
        earlier: list[str] = []
        for number in range(1, self.faults.round_attempts + 1):
            online = self.presence.wait_for_quorum(round_number)
            try:
                return attempt(online, number, earlier)
            except BelowQuorum as shortfall:
                earlier.append(str(shortfall))
                log.warning("%s (attempt %d of %d)", shortfall, number, self.faults.round_attempts)
        raise QuorumLost(f"round {round_number}: {len(earlier)} attempts ended below quorum; " + " | ".join(earlier))

    def one_round(self, local_round: int, arrays: ArrayRecord, pending: dict | None) -> tuple[ArrayRecord, dict]:
        """Train and aggregate one round; close the previous one; checkpoint this one."""
        round_number = self.round_offset + local_round

        def attempt(connected: dict[int, str], number: int, earlier: list[str]) -> tuple[ArrayRecord, dict]:
            started = time.monotonic()
            online = drawn(connected, self.settings.sites_per_round, self.settings.seed, round_number)
            self.state.set("round", round=round_number, stage="training", attempt=number)
            config = ConfigRecord({EVALUATE_INCOMING: pending is not None, RUN_KEY: self.run_key})
            view = OnlineNodes(self.grid, online)
            messages = list(self.strategy.configure_train(local_round, arrays, config, view))
            if self.secure is None:
                train = self._exchange(messages, f"round {round_number} training", online)
                self._refuse_malformed(train, arrays, online)
            else:  # the strategy still prepares its server step; SecAgg+ delivers the round
                last = round_number >= self.settings.rounds
                following = (
                    None
                    if last
                    else drawn(connected, self.settings.sites_per_round, self.settings.seed, round_number + 1)
                )
                train = self.secure.train(round_number, arrays, config, online, self.state, following)
            self._require_quorum(train, "training", round_number, len(messages))
            if pending is not None:
                self._close(pending, arrays, train, INCOMING_PREFIX)
            aggregated, _ = self.strategy.aggregate_train(local_round, _training_metrics_only(train.replies))
            if aggregated is None:
                raise FederationError(
                    f"round {round_number}: the strategy produced no model from "
                    f"{len(train.replies)} replies (inconsistent tensors?)"
                )
            new_arrays = in_dtypes_of(aggregated, arrays)
            row = self._train_row(round_number, train, time.monotonic() - started)
            row.update(attempts=number, earlier_attempts=earlier, sites_online=sorted(connected.values()))
            if online is not connected:
                row["sites_drawn"] = sorted(online.values())
            save_checkpoint(self.record.run_dir, round_number, new_arrays.to_torch_state_dict(), row, self.settings)
            if self.settings.privacy.differential_privacy:
                self._account_privacy(round_number)
            return new_arrays, row

        return self._attempts(round_number, attempt)

    def _final_evaluation(self, arrays: ArrayRecord, pending: dict) -> None:
        round_number = pending["round"]

        def attempt(connected: dict[int, str], number: int, earlier: list[str]) -> None:
            self.state.set("evaluating", round=round_number, attempt=number)
            online = drawn(connected, self.settings.sites_per_round, self.settings.seed, round_number + 1)
            local_round = self.settings.rounds - self.round_offset
            view = OnlineNodes(self.grid, online)
            messages = list(self.strategy.configure_evaluate(local_round, arrays, ConfigRecord(), view))
            evaluation = self._exchange(messages, f"round {round_number} evaluation", online)
            self._require_quorum(evaluation, "evaluation", round_number, len(messages))
            pending["eval_exchange_s"] = evaluation.seconds
            self._close(pending, arrays, evaluation, "")

        self._attempts(round_number, attempt)

    def _exchange(self, messages: list[Message], what: str, online: dict[int, str]) -> Exchange:
        deadline = Deadline(self.settings.round_timeout_s, self.faults.straggler_grace_s, self.settings.min_sites)
        outcome = exchange(self.grid, messages, deadline, what, online)
        outcome.dropped.update(dict.fromkeys(outcome.failures, "training" if "training" in what else "evaluation"))
        return outcome

    def _refuse_malformed(self, train: Exchange, arrays: ArrayRecord, online: dict[int, str]) -> None:
        """Leave out every update that fails the coordinator's own check, naming the site."""
        kept = []
        for reply in train.replies:
            problem = update_problem(reply, arrays, self.faults.max_update_norm)
            if problem is None:
                kept.append(reply)
                continue
            name = online.get(reply.metadata.src_node_id, site_of(reply))
            log.error("site %s: update refused: %s", name, problem)
            train.failures[name] = f"update refused: {problem}"
            train.dropped[name] = "training (update refused)"
        train.replies = kept

    def _require_quorum(self, outcome: Exchange, what: str, round_number: int, sent: int) -> None:
        if len(outcome.replies) >= self.settings.min_sites:
            return
        reasons = "; ".join(f"{who}: {why}" for who, why in outcome.failures.items()) or "none sent"
        raise BelowQuorum(
            f"round {round_number} {what}: {len(outcome.replies)} of {sent} sites replied, "
            f"{self.settings.min_sites} needed. Failures: {reasons}"
        )

    def _account_privacy(self, rounds_released: int) -> None:
        """Record the epsilon spent so far (every global round so far was one DP release)."""
        privacy = self.settings.privacy
        epsilon = gaussian_epsilon(privacy.noise_multiplier, rounds_released, privacy.delta)
        transport = {**self.record.read().get("transport", {}), "dp_epsilon": epsilon, "dp_delta": privacy.delta}
        self.record.update(
            transport=transport,
            privacy={
                "epsilon": epsilon,
                "delta": privacy.delta,
                "rounds": rounds_released,
                "noise_multiplier": privacy.noise_multiplier,
                "clipping_norm": privacy.clipping_norm,
                "unit": "site (all of a site's data)",
                "accounting": "RDP, full participation",
            },
        )

    def _close(self, row: dict, weights: ArrayRecord, scored: Exchange, prefix: str) -> None:
        """Add the sites' Dice of the round's model (``weights``) to its row; checkpoint and record it."""
        for reply in scored.replies:
            try:
                score = {"num_val": metric(reply, f"{prefix}num-examples"), "dice": metric(reply, f"{prefix}dice")}
            except FederationError as missing:  # e.g. a score that was not ready for its unmasking reply
                row["failures"].setdefault(site_of(reply), f"scoring: {missing}")
                continue
            row["sites"].setdefault(site_of(reply), {}).update(score)
        for site, reason in scored.failures.items():
            row["failures"].setdefault(site, f"scoring: {reason}")
        evaluated = [s for s in row["sites"].values() if "dice" in s and s.get("num_val", 0) > 0]
        cases = sum(s["num_val"] for s in evaluated)
        row["global_dice"] = sum(s["dice"] * s["num_val"] for s in evaluated) / cases if cases else 0.0
        row["closed_at"] = time.time()
        # The checkpoint first: a crash before the metrics row leaves the round unscored in
        # metrics.json, and a resume scores it again; never a row without its checkpoint's Dice.
        save_checkpoint(self.record.run_dir, row["round"], weights.to_torch_state_dict(), row, self.settings)
        self.record.append_round(row)
        log.info(
            "round %d/%d: global Dice %.3f in %.1f s",
            row["round"],
            self.settings.rounds,
            row["global_dice"],
            row["wall_s"],
        )

    @staticmethod
    def _train_row(round_number: int, train: Exchange, wall: float) -> dict:
        sites: dict[str, dict[str, float]] = {}
        for reply in train.replies:
            sites[site_of(reply)] = {
                "num_train": metric(reply, "num-examples"),
                "train_loss": metric(reply, "train-loss"),
                "train_seconds": metric(reply, "train-seconds"),
            }
        return {
            "round": round_number,
            "sites": sites,
            "failures": dict(train.failures),
            "dropped": dict(train.dropped),
            "wall_s": wall,
            "train_exchange_s": train.seconds,
        }
