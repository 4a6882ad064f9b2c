"""The site's half of secure aggregation (SecAgg+): the update leaves the site only masked.

Flower's SecAgg+ exists only for its legacy message layout (``fitins``/``fitres``), so training
under secure aggregation goes through a legacy ``ClientApp`` with ``secaggplus_mod``; the site's
work is the same :class:`client.local_round.SiteRound` as in the plain path. The protocol has
four stages per round (set-up, key shares, masked update, unmasking); only the masked update
trains, which is why this module and ``client.app`` import the ML stack lazily: a key stage run
cold (without the warm worker) should not pay for importing torch and MONAI.

The coordinator sends the next round's set-up and key shares inside this round's masked-update
and unmasking messages (server/secure_overlap.py); :func:`round_keys_mod` runs each part in its
own round's protocol state, so two rounds' keys never mix.

Masking works on values clipped to ``+-clipping_range`` and quantised; a model weight beyond the
range would be silently distorted, so the site refuses to send such a model instead. The masked
vectors leave as uint32, not Flower's int64 (common/masked_update.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.message import make_message
from flwr.client import Client, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, RECORD_KEY_STATE, Key

from client.egress import egress_guard_mod
from client.host_memory import kept_while_computing
from client.incoming_score import IncomingScore, incoming_metrics, incoming_score_mod
from client.site import SiteContext
from common.errors import InsiteError, SiteDataError
from common.masked_update import narrowed
from common.protocol import EVALUATE_INCOMING, NEXT_ROUND_GROUP, NEXT_ROUND_RECORD, RUN_KEY, SITE_METRIC
from common.settings import RunSettings, from_run_config

log = logging.getLogger(__name__)

# Where a round's SecAgg+ state waits between its messages: "secaggplus_state:<round>".
ROUND_STATE_PREFIX = f"{RECORD_KEY_STATE}:"


def is_secure_message(msg: Message) -> bool:
    """A SecAgg+ protocol message (any of its four stages) rather than a plain train message."""
    return RECORD_KEY_CONFIGS in msg.content.config_records


def check_maskable(site: str, weights: dict[str, Any], settings: RunSettings) -> None:
    """Refuse a model SecAgg+ would clip: every value must lie within the clipping range."""
    limit = settings.aggregation.clipping_range
    for name, tensor in weights.items():
        peak = float(tensor.abs().max()) if tensor.numel() else 0.0
        if peak > limit:
            raise SiteDataError(
                f"site {site}: weight '{name}' reaches {peak:.3g}, beyond the secure "
                f"aggregation range +-{limit:g}; raise aggregation.clipping_range"
            )


class SiteClient(NumPyClient):
    """Legacy-API view of the site: ``fit`` = score the incoming model (now or after the reply), train, send weights."""

    def __init__(self, context: Context) -> None:
        self.context = context

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        import torch  # noqa: PLC0415  (lazy: see the module docstring)

        from client.local_round import SiteRound  # noqa: PLC0415

        site = SiteContext.from_node_config(self.context.node_config)
        settings = from_run_config(self.context.run_config)
        try:
            job = SiteRound.prepare(site, settings)
            names = job.parameter_names()
            if len(names) != len(parameters):
                raise SiteDataError(
                    f"site {site.name}: global model has {len(parameters)} tensors, the run's model {len(names)}"
                )
            weights = {n: torch.from_numpy(np.array(a, copy=True)) for n, a in zip(names, parameters, strict=True)}
            round_number = int(config["server-round"])
            scoring = IncomingScore(site, self.context.run_id, round_number)
            score_incoming = bool(config.get(EVALUATE_INCOMING, False))
            deferred = score_incoming and scoring.worth_deferring()
            with kept_while_computing():
                incoming = scoring.now(lambda: job.evaluate(weights)) if score_incoming and not deferred else {}
                # A deferred score needs the incoming weights after training: then they are not trained in.
                new_weights, metrics = job.train(
                    weights, round_number, str(config.get(RUN_KEY, "")), in_place=not deferred
                )
            metrics.update(incoming_metrics(incoming))
            check_maskable(site.name, new_weights, settings)
            cases = int(metrics["num-examples"])
            if cases > settings.aggregation.max_weight:
                raise SiteDataError(
                    f"site {site.name}: {cases} training cases exceed the secure "
                    f"aggregation max_weight {settings.aggregation.max_weight:g}"
                )
        except InsiteError as error:  # becomes the error reply the coordinator reports
            reason = str(error)
            raise InsiteError(reason if reason.startswith("site ") else f"site {site.name}: {reason}") from None
        if deferred:  # its score goes with the unmasking reply (client/incoming_score.py)
            scoring.after_reply(lambda: job.evaluate(weights))
        return [t.numpy() for t in new_weights.values()], cases, {**metrics, SITE_METRIC: site.name}


def _client(context: Context) -> Client:
    return SiteClient(context).to_client()


def narrow_masked_update_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """The masked update that ``secaggplus_mod`` produced, as uint32 vectors (exact: see common/masked_update.py)."""
    reply = call_next(msg, context)
    configs = None if reply.has_error() else reply.content.config_records.get(RECORD_KEY_CONFIGS)
    if configs is not None and Key.MASKED_PARAMETERS in configs:
        # cast: SecAgg+ sends the masked update as a list of byte vectors; ConfigRecord types any value
        configs[Key.MASKED_PARAMETERS] = narrowed(cast(list[bytes], configs[Key.MASKED_PARAMETERS]))
    return reply


@contextmanager
def _round_state(context: Context, group: str) -> Iterator[None]:
    """Round ``group``'s protocol state where ``secaggplus_mod`` keeps its one state, for the duration."""
    # The RecordDict itself: its config_records view is a snapshot that later writes do not update.
    state = context.state
    saved = state.get(ROUND_STATE_PREFIX + group)
    if saved is not None:
        state[RECORD_KEY_STATE] = saved
        del state[ROUND_STATE_PREFIX + group]
    elif RECORD_KEY_STATE in state:
        del state[RECORD_KEY_STATE]
    try:
        yield
    finally:
        if RECORD_KEY_STATE in state:
            state[ROUND_STATE_PREFIX + group] = state[RECORD_KEY_STATE]
            del state[RECORD_KEY_STATE]


def round_keys_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Run this round's stage, then the next round's if the message carries one, each in its round's state.

    Flower's ``secaggplus_mod`` keeps a single protocol state per run; here each round has its own,
    and only the rounds this message names are kept (a round whose protocol was abandoned, e.g.
    after a failed attempt, is forgotten). If the next round's stage fails here, its reply is left
    out and the coordinator sets that round's keys up afresh; this round's reply still leaves.
    """
    group = msg.metadata.group_id
    riding = msg.content.config_records.get(NEXT_ROUND_RECORD)
    if riding is not None:
        del msg.content.config_records[NEXT_ROUND_RECORD]
    with _round_state(context, group):
        reply = call_next(msg, context)
    kept = {group}
    if riding is not None and not reply.has_error():
        part = ConfigRecord(dict(riding))
        next_group = str(part.pop(NEXT_ROUND_GROUP, ""))
        kept.add(next_group)
        try:
            with _round_state(context, next_group):
                answer = call_next(make_message(msg.metadata, RecordDict({RECORD_KEY_CONFIGS: part})), context)
            reply.content.config_records[NEXT_ROUND_RECORD] = answer.content.config_records[RECORD_KEY_CONFIGS]
        except Exception as error:  # this round's reply is good; only the next round's keys are lost
            site = context.node_config.get("site-name", "this site")
            log.warning(
                "site %s: round %s's secure-aggregation keys could not be set up now: %s", site, next_group, error
            )
    for key in [k for k in context.state if k.startswith(ROUND_STATE_PREFIX)]:
        if key.removeprefix(ROUND_STATE_PREFIX) not in kept:
            del context.state[key]
    return reply


# The guard inside secaggplus_mod checks the update before it is masked (client/egress.py).
secure_app = ClientApp(
    client_fn=_client,
    mods=[incoming_score_mod, narrow_masked_update_mod, round_keys_mod, secaggplus_mod, egress_guard_mod],
)
