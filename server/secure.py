"""Training rounds under SecAgg+: the coordinator reconstructs only the sites' weighted mean.

Flower runs SecAgg+ only through its legacy workflow (``SecAggPlusWorkflow`` on a
``LegacyContext`` with a legacy strategy). This module drives that workflow one round at a time
from :class:`server.rounds.RoundLoop` and hands the result back in the loop's own terms: one
reply per site that carries the *aggregate* (never the site's own update) with the site's scalar
metrics, so the run's strategy (FedAvg, FedAdam, ...) applies its server step to the mean exactly
as in the plain path, and quorum, failures and records work the same.

The legacy strategy below does nothing but select every connected site and capture what the
workflow reconstructs. Flower's workflow ends a halted round silently (the model stays as it
was); here a halt is a :class:`FederationError` naming the stage and the sites' reasons.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from typing import Any

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
from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import ClientManager, SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.app_utils import start_update_client_manager_thread
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.serverapp import Grid

from common.errors import FederationError
from common.protocol import SITE_METRIC
from common.settings import RunSettings
from server.exchange import Deadline, Exchange, exchange, node_names

log = logging.getLogger(__name__)

SITE_IN_REASON = re.compile(r"\bsite ([A-Za-z0-9][A-Za-z0-9_.-]*):")
FLOWER_WRAPPED = re.compile(r"<class '[^']+'>:<'(.*)'>", re.DOTALL)
STAGES = ("setup_stage", "share_keys_stage", "collect_masked_vectors_stage", "unmask_stage")


class _SelectAndCapture(Strategy):
    """Legacy strategy: send the round's config to every connected site, keep the aggregate."""

    def __init__(self, min_sites: int, wait_seconds: float) -> None:
        self.min_sites = min_sites
        self.wait_seconds = wait_seconds
        self.config: dict[str, Scalar] = {}
        self.aggregate: Parameters | None = None
        self.site_metrics: dict[int, dict[str, Scalar]] = {}

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        client_manager.wait_for(self.min_sites, timeout=int(self.wait_seconds))
        return [(proxy, FitIns(parameters, dict(self.config))) for proxy in client_manager.all().values()]

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
    """SecAgg+ that remembers where it halted and why the sites that failed did."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.halted_at: str | None = None
        self.failures: list[str] = []

    def __call__(self, grid: Grid, context: Context) -> None:
        self.halted_at, self.failures = None, []
        super().__call__(grid, context)


def _watch(stage: str):
    def run_stage(self: _WatchedWorkflow, grid: Grid, context: LegacyContext, state: Any) -> bool:
        ok = getattr(SecAggPlusWorkflow, stage)(self, grid, context, state)
        # Flower files a failed reply once per loop over the replies: keep each reason once.
        self.failures = list(dict.fromkeys(_reason(failure) for failure in state.failures))
        if not ok:
            self.halted_at = stage.removesuffix("_stage").replace("_", " ")
        return ok

    return run_stage


for _stage in STAGES:
    setattr(_WatchedWorkflow, _stage, _watch(_stage))


class _PromptGrid:
    """The run's Grid, but ``send_and_receive`` is insite's :func:`server.exchange.exchange`.

    Flower's workflow waits through ``send_and_receive`` four times a round; its 3 s poll would
    add up to 12 s of waiting, and its single timeout could not tell which site did not answer.
    """

    def __init__(self, grid: Grid, deadline: Deadline) -> None:
        self._grid = grid
        self._deadline = deadline

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        outcome = exchange(self._grid, messages, self._deadline, "secure aggregation stage", node_names(self._grid))
        return [*outcome.replies, *outcome.errors]


def _reason(failure: Any) -> str:
    """A site's own words: Flower wraps a ClientApp exception as "<class 'X'>:<'text'>"."""
    error = failure.args[0] if isinstance(failure, Exception) and failure.args else failure
    text = str(getattr(error, "reason", error))
    wrapped = FLOWER_WRAPPED.fullmatch(text)
    return wrapped.group(1) if wrapped else text


class SecureTraining:
    """One SecAgg+ training exchange per call; the reply per site holds the aggregate only."""

    def __init__(self, grid: Grid, context: Context, settings: RunSettings) -> None:
        secure = settings.aggregation
        self.grid = _PromptGrid(grid, Deadline(settings.round_timeout_s, settings.round_timeout_s, settings.min_sites))
        self.settings = settings
        self.strategy = _SelectAndCapture(settings.min_sites, settings.round_timeout_s)
        self.manager = SimpleClientManager()
        self.legacy = LegacyContext(context, strategy=self.strategy, client_manager=self.manager)
        self.workflow = _WatchedWorkflow(
            num_shares=_count_or_fraction(secure.num_shares),
            reconstruction_threshold=_count_or_fraction(secure.reconstruction_threshold),
            max_weight=secure.max_weight,
            clipping_range=secure.clipping_range,
            quantization_range=secure.quantization_range,
            timeout=settings.round_timeout_s,
        )
        self._thread, self._stop, ready = start_update_client_manager_thread(grid, self.manager)
        ready.wait()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def train(self, round_number: int, arrays: ArrayRecord, config: ConfigRecord) -> Exchange:
        """Run SecAgg+ for one round: one reply per site that took part, each with the aggregate."""
        started = time.monotonic()
        self.strategy.config = {**config, "server-round": round_number}
        self.strategy.aggregate = None
        self.legacy.state.array_records[MAIN_PARAMS_RECORD] = arrays
        self.legacy.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord(
            {Key.CURRENT_ROUND: round_number, Key.START_TIME: started}
        )
        self.workflow(self.grid, self.legacy)
        failures = {_site_named(reason, n): reason for n, reason in enumerate(self.workflow.failures)}
        if self.strategy.aggregate is None:
            stage = self.workflow.halted_at or "aggregation"
            reasons = "; ".join(self.workflow.failures) or "too few sites took part"
            raise FederationError(
                f"round {round_number}: secure aggregation halted at the {stage} "
                f"stage ({reasons}); the global model was not updated"
            )
        mean = _named(arrays, parameters_to_ndarrays(self.strategy.aggregate))
        replies = [_reply(node, mean, metrics) for node, metrics in self.strategy.site_metrics.items()]
        return Exchange(replies, failures, seconds=time.monotonic() - started)


def _site_named(reason: str, index: int) -> str:
    """Sites' errors start "site NAME:" (see client.app); Flower wraps them in its own text."""
    found = SITE_IN_REASON.search(reason)
    return f"site {found.group(1)}" if found else f"failure {index + 1}"


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
    numbers = {k: v for k, v in metrics.items() if isinstance(v, int | float) and k != SITE_METRIC}
    content = RecordDict({"arrays": mean, "metrics": MetricRecord(numbers), "site": ConfigRecord({"name": site})})
    return Message(content, dst_node_id=node, message_type="train")
