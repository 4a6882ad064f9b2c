"""Training rounds under SecAgg+: the coordinator reconstructs only the sites' weighted mean.

Flower runs SecAgg+ only through its legacy workflow (``SecAggPlusWorkflow`` on a
``LegacyContext`` with a legacy strategy). This module drives that workflow one round at a time
from :class:`server.rounds.RoundLoop` and hands the result back in the loop's own terms: one
reply per site that carries the *aggregate* (never the site's own update) with the site's scalar
metrics, so the run's strategy (FedAvg, FedAdam, ...) applies its server step to the mean exactly
as in the plain path, and quorum, failures and records work the same.

The legacy strategy below does nothing but select the round's online sites and capture what the
workflow reconstructs. Flower's workflow ends a halted round silently (the model stays as it
was); here a halt is :class:`server.presence.BelowQuorum` naming the stage and the sites'
reasons, and the round loop tries the round again.

Two exchanges a round, not four: while round r trains and unmasks, round r+1's set-up and key
shares travel in the same messages (server/secure_overlap.py). Round r+1 uses those keys when its
sites are exactly the ones keyed; otherwise (a site dropped, came back, or a different draw) it
sets its keys up afresh in exchanges of its own, as the first round does.

Dropouts: each site shares its key material with ``num_shares`` sites and any
``reconstruction_threshold`` of them can rebuild what the sum needs, so a round survives sites
lost at any stage down to that threshold (see configs/federation.toml for the numbers).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.app.typing import MetricRecordValues
from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    parameters_to_ndarrays,
)
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.common.secure_aggregation.secaggplus_constants import Key as SecAggKey
from flwr.compat.common.recorddict_compat import arrayrecord_to_parameters, fitins_to_recorddict
from flwr.server.client_manager import ClientManager, SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState
from flwr.serverapp import Grid

from common.errors import FederationError
from common.masked_update import widened
from common.protocol import SITE_METRIC
from common.settings import RunSettings
from server.exchange import Deadline, Exchange, exchange
from server.grid_wrapper import GridWrapper
from server.live_state import LiveState
from server.presence import BelowQuorum
from server.secure_overlap import carried

log = logging.getLogger(__name__)

FLOWER_WRAPPED = re.compile(r"<class '[^']+'>:<'(.*)'>", re.DOTALL)


class _SelectAndCapture(Strategy):
    """Legacy strategy: select the round's online sites, keep the aggregate.

    The model and config it hands Flower's set-up stage are placeholders: set-up may run a round
    ahead, before the model exists; :meth:`_Protocol.load` puts the real ones in.
    """

    def __init__(self) -> None:
        self.nodes: list[int] = []
        self.grid: Grid | None = None
        self.aggregate: Parameters | None = None
        self.site_metrics: dict[int, dict[str, Scalar]] = {}

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        # The round loop has already waited (bounded) for these sites; Flower's client manager
        # would wait for min_available_nodes without a limit.
        assert self.grid is not None
        run_id = self.grid.run.run_id
        return [(GridClientProxy(node, self.grid, run_id), FitIns(parameters, {})) for node in self.nodes]

    def aggregate_fit(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]], failures: list[Any]
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        # Every FitRes carries the same reconstructed mean; only the metrics are per site.
        self.aggregate = results[0][1].parameters if results else None
        self.site_metrics = {proxy.node_id: dict(res.metrics) for proxy, res in results}
        return self.aggregate, {}

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return None

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        return []

    def aggregate_evaluate(
        self, server_round: int, results: list[tuple[ClientProxy, EvaluateRes]], failures: list[Any]
    ) -> tuple[float | None, dict[str, Scalar]]:
        return None, {}

    def evaluate(self, server_round: int, parameters: Parameters) -> None:
        return None


class _Protocol:
    """One round's SecAgg+ instance: Flower's workflow state, driven one stage at a time.

    Flower's ``SecAggPlusWorkflow.__call__`` runs the four stages of one round back to back; here
    each stage is run on its own, so that two rounds' instances can share exchanges. Each instance
    has its own legacy context (Flower's stages keep the round number and model there).
    """

    def __init__(
        self, workflow: SecAggPlusWorkflow, context: Context, grid: Grid, round_number: int, sites: dict[int, str]
    ) -> None:
        self.workflow = workflow
        self.round_number = round_number
        self.strategy = _SelectAndCapture()
        self.strategy.grid = grid
        self.strategy.nodes = list(sites)
        own = Context(
            run_id=context.run_id,
            node_id=context.node_id,
            node_config=context.node_config,
            state=RecordDict(),
            run_config=context.run_config,
        )
        self.legacy = LegacyContext(own, strategy=self.strategy, client_manager=SimpleClientManager())
        # The model is not known at set-up (a round ahead); it is put in by load() before training.
        self.legacy.state.array_records[MAIN_PARAMS_RECORD] = ArrayRecord()
        self.legacy.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord(
            {Key.CURRENT_ROUND: round_number, Key.START_TIME: time.time()}
        )
        self.state = WorkflowState()
        self.halted_at: str | None = None

    def stage(self, name: str) -> Callable[[Grid], bool]:
        """Flower's stage ``name`` (e.g. ``"setup_stage"``) on this instance; it records where it halted."""

        def run(grid: Grid) -> bool:
            ok = bool(getattr(SecAggPlusWorkflow, name)(self.workflow, grid, self.legacy, self.state))
            if not ok:
                self.halted_at = name.removesuffix("_stage").replace("_", " ")
            elif name == "share_keys_stage":
                # Only the sites that completed the key exchange hold masks with one another (a
                # site masks its update with exactly those whose key shares reached it). Flower's
                # unmask stage would also ask the survivors for key shares of a site lost at
                # set-up or key exchange, which they never received, and every survivor then fails
                # (KeyError in secaggplus_mod._unmask): such a site is simply not part of this sum.
                self.state.sampled_node_ids = set(self.state.active_node_ids)
            return ok

        return run

    def keyed_for(self, round_number: int, sites: dict[int, str]) -> bool:
        """Whether this instance's completed key exchange is for ``round_number`` with exactly ``sites``."""
        return self.round_number == round_number and self.state.active_node_ids == set(sites)

    def load(self, arrays: ArrayRecord, config: Mapping[str, Scalar]) -> None:
        """The round's model and training config, to every keyed site (the masked-update stage sends them)."""
        parameters = arrayrecord_to_parameters(arrays, keep_input=True)
        fitins = FitIns(parameters, {**config, "server-round": self.round_number})
        record = fitins_to_recorddict(fitins, keep_input=True)
        # One record per site: the masked-update stage adds each site's key shares to its own.
        self.state.nid_to_fitins = {node: RecordDict(dict(record)) for node in self.state.active_node_ids}


# The SecAgg+ stages by the value of their "stage" key, as a round's rows and state name them.
STAGE_NAMES = {
    "setup": "setup",
    "share_keys": "share-keys",
    "collect_masked_vectors": "masked-update",
    "unmask": "unmask",
}


class _PromptGrid(GridWrapper):
    """The run's Grid, but ``send_and_receive`` is insite's :func:`server.exchange.exchange`.

    Flower's workflow waits through ``send_and_receive`` four times a round, with one timeout for
    all four and no word on who did not answer. Here each stage has its deadline (the training
    stage ``round_timeout_s``, the key exchanges ``stage_timeout_s``, and ``straggler_grace_s``
    once ``min_sites`` sites have answered), and every site that fails or stays silent is
    recorded with the stage. A late reply is never pulled, so it is never half-used: the workflow
    treats that site as dropped, and SecAgg+ removes its masks from the survivors' sum.
    """

    def __init__(self, grid: Grid, settings: RunSettings) -> None:
        super().__init__(grid)
        self._settings = settings
        self.names: dict[int, str] = {}
        self.dropped: dict[str, str] = {}
        self.failures: dict[str, str] = {}
        # Scores of the round's incoming model that came with the unmasking replies (client/incoming_score.py)
        self.scores: dict[int, dict[str, Scalar]] = {}
        self.on_stage: Callable[[str], None] = lambda stage: None

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        stage = _stage_of(messages)
        self.on_stage(stage)
        faults = self._settings.faults
        limit = self._settings.round_timeout_s if stage == "masked-update" else faults.stage_timeout_s
        deadline = Deadline(limit, faults.straggler_grace_s, self._settings.min_sites)
        outcome = exchange(self.wrapped, messages, deadline, f"secure aggregation {stage} stage", self.names)
        for site, reason in outcome.failures.items():
            self.dropped.setdefault(site, stage)
            self.failures.setdefault(site, f"dropped at {stage}: {_unwrapped(reason)}")
        for reply in outcome.replies:
            _widen_masked_update(reply)
            metrics = reply.content.metric_records.get("metrics")
            if stage == "unmask" and metrics is not None:
                numbers: dict[str, Scalar] = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
                self.scores[reply.metadata.src_node_id] = numbers
        return [*outcome.replies, *outcome.errors]


def _widen_masked_update(reply: Message) -> None:
    """A site's masked vectors back to the int64 Flower's workflow adds up (sites send uint32)."""
    configs = reply.content.config_records.get(RECORD_KEY_CONFIGS)
    if configs is not None and SecAggKey.MASKED_PARAMETERS in configs:
        configs[SecAggKey.MASKED_PARAMETERS] = widened(cast(list[bytes], configs[SecAggKey.MASKED_PARAMETERS]))


def _stage_of(messages: list[Message]) -> str:
    for message in messages:
        configs = message.content.config_records.get(RECORD_KEY_CONFIGS)
        if configs is not None and SecAggKey.STAGE in configs:
            return STAGE_NAMES.get(str(configs[SecAggKey.STAGE]), str(configs[SecAggKey.STAGE]))
    return "unknown"


def _unwrapped(text: str) -> str:
    """A site's own words: Flower wraps a ClientApp exception as "<class 'X'>:<'text'>"."""
    wrapped = FLOWER_WRAPPED.fullmatch(text)
    return wrapped.group(1) if wrapped else text


class SecureTraining:
    """One SecAgg+ training exchange per call; the reply per site holds the aggregate only."""

    def __init__(self, grid: Grid, context: Context, settings: RunSettings) -> None:
        secure = settings.aggregation
        self.raw_grid = grid
        self.grid = _PromptGrid(grid, settings)
        self.context = context
        self.settings = settings
        self.workflow = SecAggPlusWorkflow(
            num_shares=_count_or_fraction(secure.num_shares),
            reconstruction_threshold=_count_or_fraction(secure.reconstruction_threshold),
            max_weight=secure.max_weight,
            clipping_range=secure.clipping_range,
            quantization_range=secure.quantization_range,
        )
        # A hand-over between this round's exchange and the next round's key exchange waits at
        # most as long as this round's longest exchange may last.
        self.handover_s = settings.round_timeout_s + settings.faults.straggler_grace_s
        self.prepared: _Protocol | None = None  # the next round's keys, set up during this round

    def train(
        self,
        round_number: int,
        arrays: ArrayRecord,
        config: ConfigRecord,
        online: dict[int, str],
        state: LiveState,
        following: dict[int, str] | None = None,
    ) -> Exchange:
        """Run SecAgg+ for one round with the ``online`` sites: a reply per site whose update is in the sum.

        ``following``: the sites expected to train in the next round (None after the last); their
        keys for it are set up inside this round's messages when they all train in this one.
        Sites that drop out at any stage are left out of the sum (the protocol removes their
        masks) and named with the stage; below the reconstruction threshold the round is
        :class:`BelowQuorum` and tried again.
        """
        started = time.monotonic()
        self.grid.names, self.grid.dropped, self.grid.failures, self.grid.scores = dict(online), {}, {}, {}
        self.grid.on_stage = lambda stage: state.set("round", round=round_number, stage=stage)
        protocol, self.prepared = self.prepared, None
        if protocol is None or not protocol.keyed_for(round_number, online):
            if protocol is not None:
                log.info("round %d: its sites are not the ones keyed during the last round; new keys", round_number)
            protocol = _Protocol(self.workflow, self.context, self.raw_grid, round_number, online)
            if protocol.stage("setup_stage")(self.grid):
                protocol.stage("share_keys_stage")(self.grid)
        if protocol.halted_at is None:
            protocol.load(arrays, cast(Mapping[str, Scalar], config))
            self._train_and_key_next(protocol, following)
        failures, dropped = dict(self.grid.failures), dict(self.grid.dropped)
        if protocol.strategy.aggregate is None:
            stage = protocol.halted_at or "aggregation"
            reasons = "; ".join(f"{site}: {why}" for site, why in failures.items()) or "too few sites took part"
            raise BelowQuorum(
                f"round {round_number}: secure aggregation halted at the {stage} stage ({reasons}); "
                "the global model was not updated"
            )
        mean = _named(arrays, parameters_to_ndarrays(protocol.strategy.aggregate))
        replies = [
            _reply(node, mean, {**metrics, **self.grid.scores.get(node, {})})
            for node, metrics in protocol.strategy.site_metrics.items()
        ]
        return Exchange(replies, failures, seconds=time.monotonic() - started, dropped=dropped)

    def _train_and_key_next(self, protocol: _Protocol, following: dict[int, str] | None) -> None:
        """Masked update and unmasking of ``protocol``; the next round's set-up and key shares inside them."""
        upcoming = None
        if following and len(following) >= 2 and set(following) <= protocol.state.active_node_ids:
            upcoming = _Protocol(self.workflow, self.context, self.raw_grid, protocol.round_number + 1, following)
        trained, set_up = carried(
            self.grid,
            protocol.stage("collect_masked_vectors_stage"),
            upcoming.stage("setup_stage") if upcoming else None,
            self.handover_s,
        )
        if not trained:
            return
        unmasked, keyed = carried(
            self.grid,
            protocol.stage("unmask_stage"),
            upcoming.stage("share_keys_stage") if upcoming and set_up else None,
            self.handover_s,
        )
        if unmasked and keyed:
            self.prepared = upcoming


def _count_or_fraction(value: float) -> int | float:
    """SecAgg+ reads an int as a count and a float as a fraction."""
    return int(value) if value > 1 else float(value)


def _named(template: ArrayRecord, arrays: list[np.ndarray]) -> ArrayRecord:
    """Put the reconstructed lists back under the model's tensor names and dtypes."""
    reference = template.to_numpy_ndarrays()
    if len(arrays) != len(reference):
        raise FederationError(f"secure aggregation returned {len(arrays)} tensors, the model has {len(reference)}")
    return ArrayRecord(
        {
            name: Array(np.asarray(a, dtype=r.dtype).reshape(r.shape))
            for name, a, r in zip(template.keys(), arrays, reference, strict=True)
        }
    )


def _reply(node: int, mean: ArrayRecord, metrics: dict[str, Scalar]) -> Message:
    site = str(metrics.get(SITE_METRIC, f"node {node}"))
    numbers: dict[str, MetricRecordValues] = {
        k: v for k, v in metrics.items() if isinstance(v, int | float) and k != SITE_METRIC
    }
    content = RecordDict({"arrays": mean, "metrics": MetricRecord(numbers), "site": ConfigRecord({"name": site})})
    return Message(content, dst_node_id=node, message_type="train")
