"""The site's Flower ClientApp: records in, records out; the work is in :mod:`client.local_round`.

A site failure the administrator can fix (missing data, unreadable volume, bad node config) is
returned as a Flower error reply whose reason names the site and the file, so the coordinator can
say which site failed and why.

Under secure aggregation (the default) training messages belong to the SecAgg+ protocol and go
to :data:`client.secure.secure_app`; evaluation is plain either way (it returns only metrics).
The ML stack is imported inside the handlers: without the warm worker Flower starts a process per
message, and SecAgg+'s key stages need no torch or MONAI.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    MetricRecordValues,
    RecordDict,
)
from flwr.clientapp import ClientApp

from client.egress import egress_guard_mod, ledger_mod
from client.host_memory import kept_while_computing
from client.packing import packed_arrays_mod
from client.secure import is_secure_message, secure_app
from client.site import SiteContext
from common.errors import InsiteError
from common.evaluation import EVALUATE_LOCAL_ONLY, EVALUATE_MODEL, EVALUATE_PERSONALISED, scoring_settings
from common.protocol import EVALUATE_INCOMING, RUN_KEY
from common.settings import RunSettings, from_run_config
from common.statistics import ACTION as STATISTICS_ACTION

if TYPE_CHECKING:
    from client.local_round import SiteRound

log = logging.getLogger(__name__)

SITE_ERROR = 100  # Flower reserves small codes; ours is any site-side InsiteError
# Every reply passes the egress guard, is packed (its weights one object on the wire:
# client/packing.py), and goes into the site's ledger exactly as it leaves, the ledger sealing a
# small reply as one object (client/egress.py, common/message_envelope.py).
app = ClientApp(mods=[ledger_mod, packed_arrays_mod, egress_guard_mod])


def _metric_record(metrics: dict[str, float]) -> MetricRecord:
    # cast: MetricRecord takes an invariant dict of any metric value, though it only reads (copies) it
    return MetricRecord(cast(dict[str, MetricRecordValues], metrics))


def _answer(
    msg: Message,
    context: Context,
    work: Callable[[SiteRound, dict], RecordDict],
    adapt: Callable[[RunSettings], RunSettings] = lambda settings: settings,
) -> Message:
    """Run ``work`` on the message's weights (none: ``{}``) with the run's settings, as ``adapt`` makes them."""
    from client.local_round import SiteRound  # noqa: PLC0415  (lazy: see the module docstring)

    site_name = str(context.node_config.get("site-name", "unknown site"))
    try:
        site = SiteContext.from_node_config(context.node_config)
        job = SiteRound.prepare(site, adapt(from_run_config(context.run_config)))
        arrays = msg.content.array_records.get("arrays")
        # The message's copy of each tensor goes as it becomes a tensor: a model is held once, not twice.
        weights = arrays.to_torch_state_dict(keep_input=False) if arrays is not None else {}
        with kept_while_computing():
            content = work(job, weights)
    except InsiteError as error:
        return _site_failure(msg, site_name, error)
    content["site"] = ConfigRecord({"name": site_name})
    return Message(content, reply_to=msg)


def _site_failure(msg: Message, site_name: str, error: InsiteError) -> Message:
    log.error("%s", error)
    return Message(Error(code=SITE_ERROR, reason=f"site {site_name}: {error}"), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    if is_secure_message(msg):
        return secure_app(msg, context)
    config = msg.content.config_records["config"]
    round_number = int(cast(int, config["server-round"]))  # cast: the server sends an int; a record types any value

    def work(job: SiteRound, weights: dict) -> RecordDict:
        score_incoming = bool(config.get(EVALUATE_INCOMING, False))
        new_weights, metrics = job.score_and_train(weights, round_number, score_incoming, str(config.get(RUN_KEY, "")))
        return RecordDict({"arrays": ArrayRecord(new_weights), "metrics": _metric_record(metrics)})

    return _answer(msg, context, work)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    def work(job: SiteRound, weights: dict) -> RecordDict:
        return RecordDict({"metrics": _metric_record(job.evaluate(weights))})

    return _answer(msg, context, work)


@app.query(STATISTICS_ACTION)
def statistics(msg: Message, context: Context) -> Message:
    """The site's data statistics (binned counts only), before any training: ``insite coord stats``."""
    from client.statistics import statistics_reply  # noqa: PLC0415  (lazy: see the module docstring)

    try:
        site = SiteContext.from_node_config(context.node_config)
        stats = from_run_config(context.run_config).stats.at_site(site.stats_min_count)
        content = statistics_reply(site.name, site.data_path, stats)
    except InsiteError as error:
        return _site_failure(msg, str(context.node_config.get("site-name", "unknown site")), error)
    return Message(content, reply_to=msg)


@app.evaluate(EVALUATE_MODEL.partition(".")[2])
def evaluate_model(msg: Message, context: Context) -> Message:
    """Score a model of a federated evaluation; its network comes from the message's validated settings."""
    config = dict(msg.content.config_records.get("config", {}))

    def work(job: SiteRound, weights: dict) -> RecordDict:
        return RecordDict({"metrics": _metric_record(job.evaluate_held_out(weights))})

    return _answer(msg, context, work, lambda settings: scoring_settings(settings, config))


@app.evaluate(EVALUATE_PERSONALISED.partition(".")[2])
def evaluate_personalised(msg: Message, context: Context) -> Message:
    """Adapt the message's model to this site's cases and score it; the adapted model stays here."""
    config = dict(msg.content.config_records.get("config", {}))

    def work(job: SiteRound, weights: dict) -> RecordDict:
        from client.personalise import score_personalised  # noqa: PLC0415  (lazy: see the module docstring)

        return RecordDict({"metrics": _metric_record(score_personalised(job, weights))})

    return _answer(msg, context, work, lambda settings: scoring_settings(settings, config))


@app.evaluate(EVALUATE_LOCAL_ONLY.partition(".")[2])
def evaluate_local_only(msg: Message, context: Context) -> Message:
    """Score the model this site trained alone; the model stays here, its scores leave."""

    def work(job: SiteRound, weights: dict) -> RecordDict:
        from client.local_only import score_local_only  # noqa: PLC0415  (lazy: see the module docstring)

        return RecordDict({"metrics": _metric_record(score_local_only(job.site))})

    return _answer(msg, context, work)
