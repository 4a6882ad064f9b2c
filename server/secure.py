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
from flwr.server.client_manager import ClientManager, SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.serverapp import Grid

from common.errors import FederationError
from common.masked_update import widened
from common.protocol import SITE_METRIC
from common.settings import RunSettings
from server.exchange import Deadline, Exchange, exchange
from server.grid_wrapper import GridWrapper
from server.live_state import LiveState
from server.presence import BelowQuorum

log = logging.getLogger(__name__)

FLOWER_WRAPPED = re.compile(r"<class '[^']+'>:<'(.*)'>", re.DOTALL)
STAGES = ("setup_stage", "share_keys_stage", "collect_masked_vectors_stage", "unmask_stage")


class _SelectAndCapture(Strategy):
    """Legacy strategy: send the round's config to the round's online sites, keep the aggregate."""

    def __init__(self) -> None:
        self.config: dict[str, Scalar] = {}
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
        return [
            (GridClientProxy(node, self.grid, run_id), FitIns(parameters, dict(self.config))) for node in self.nodes
        ]

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


class _WatchedWorkflow(SecAggPlusWorkflow):
    """SecAgg+ that remembers the stage where it halted (Flower's only logs it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.halted_at: str | None = None

    def __call__(self, grid: Grid, context: Context) -> None:
        self.halted_at = None
        super().__call__(grid, context)


def _watch(stage: str) -> Callable[[_WatchedWorkflow, Grid, LegacyContext, Any], bool]:
    def run_stage(self: _WatchedWorkflow, grid: Grid, context: LegacyContext, state: Any) -> bool:
        ok = bool(getattr(SecAggPlusWorkflow, stage)(self, grid, context, state))
        if not ok:
            self.halted_at = stage.removesuffix("_stage").replace("_", " ")
        elif stage == "share_keys_stage":
            # Only the sites that completed the key exchange hold masks with one another (a site
            # masks its update with exactly those whose key shares reached it). Flower's unmask
            # stage would also ask the survivors for key shares of a site lost at set-up or key
            # exchange, which they never received, and every survivor then fails (KeyError in
            # secaggplus_mod._unmask): such a site is simply not part of this round's sum.
            state.sampled_node_ids = set(state.active_node_ids)
        return ok

    return run_stage


for _stage in STAGES:
    setattr(_WatchedWorkflow, _stage, _watch(_stage))


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
        self.grid = _PromptGrid(grid, settings)
        self.settings = settings
        self.strategy = _SelectAndCapture()
        self.strategy.grid = grid
        self.legacy = LegacyContext(context, strategy=self.strategy, client_manager=SimpleClientManager())
        self.workflow = _WatchedWorkflow(
            num_shares=_count_or_fraction(secure.num_shares),
            reconstruction_threshold=_count_or_fraction(secure.reconstruction_threshold),
            max_weight=secure.max_weight,
            clipping_range=secure.clipping_range,
            quantization_range=secure.quantization_range,
        )

    def train(
        self, round_number: int, arrays: ArrayRecord, config: ConfigRecord, online: dict[int, str], state: LiveState
    ) -> Exchange:
        """Run SecAgg+ for one round with the ``online`` sites: a reply per site whose update is in the sum.

        Sites that drop out at any stage are left out of the sum (the protocol removes their
        masks) and named with the stage; below the reconstruction threshold the round is
        :class:`BelowQuorum` and tried again.
        """
        started = time.monotonic()
        self.strategy.config = {**cast(Mapping[str, Scalar], config), "server-round": round_number}
        self.strategy.nodes = list(online)
        self.strategy.aggregate = None
        self.strategy.site_metrics = {}
        self.grid.names, self.grid.dropped, self.grid.failures = dict(online), {}, {}
        self.grid.on_stage = lambda stage: state.set("round", round=round_number, stage=stage)
        self.legacy.state.array_records[MAIN_PARAMS_RECORD] = arrays
        self.legacy.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord(
            {Key.CURRENT_ROUND: round_number, Key.START_TIME: started}
        )
        self.workflow(self.grid, self.legacy)
        failures, dropped = dict(self.grid.failures), dict(self.grid.dropped)
        if self.strategy.aggregate is None:
            stage = self.workflow.halted_at or "aggregation"
            reasons = "; ".join(f"{site}: {why}" for site, why in failures.items()) or "too few sites took part"
            raise BelowQuorum(
                f"round {round_number}: secure aggregation halted at the {stage} stage ({reasons}); "
                "the global model was not updated"
            )
        mean = _named(arrays, parameters_to_ndarrays(self.strategy.aggregate))
        replies = [_reply(node, mean, metrics) for node, metrics in self.strategy.site_metrics.items()]
        return Exchange(replies, failures, seconds=time.monotonic() - started, dropped=dropped)


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
