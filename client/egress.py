"""What may leave a site, checked on every reply, and the Flower mods that enforce and record it.

The reply of a round may carry only: tensors with exactly the run's model's names, shapes and
dtypes, all finite; scalar metrics from :data:`ALLOWED_METRICS`; the site's own name; and, under
secure aggregation, the SecAgg+ protocol fields. A statistics reply (``insite coord stats``) may
carry only counts named in the closed vocabulary of :mod:`common.statistics`, each an integer
that is zero, at least the minimum count (the run's or, if higher, the site's own), or withheld.
Anything else (an extra tensor, a per-case list, a string, a file path, a NaN) is refused: the
reply is replaced by an error naming the offending field, so nothing of it leaves, and the
refusal is written to the ledger.

Two mods wrap the site's apps (see :mod:`client.app` and :mod:`client.secure`):

- :func:`ledger_mod`, outermost, appends every reply that leaves (refusals included) to the
  site's hash-chained ledger (:mod:`client.ledger`), as it leaves (its weights packed by
  :mod:`client.packing`, and the whole of a small reply one object: the ledger seals it in
  :mod:`common.message_envelope`); if the ledger cannot be written, nothing is sent.
- :func:`egress_guard_mod` checks the reply, inside the packing (it sees the tensors themselves)
  and, under SecAgg+, also inside ``secaggplus_mod``, where it sees the site's update before masking.

The expected tensors come from the run's model settings (built on PyTorch's meta device: no
memory, no weights), never from the incoming message, so a coordinator cannot widen what a site
sends by shipping a different "model".
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from functools import cache
from typing import cast

import numpy as np
from flwr.app import (
    Array,
    ConfigRecord,
    ConfigRecordValues,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.constant import ErrorCode
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.common.serde import error_to_proto

from client.ledger import Ledger
from client.site import SiteContext
from common.errors import InsiteError
from common.evaluation import SCORES, SITE_KINDS
from common.message_envelope import LIMIT, is_enveloped, opened, sealed, serialised
from common.packed_arrays import tensor_shapes
from common.protocol import INCOMING_PREFIX, NEXT_ROUND_RECORD, SITE_METRIC
from common.settings import ModelSettings, StatsSettings, from_run_config
from common.statistics import QUERY as STATISTICS_QUERY
from common.statistics import RECORD as STATISTICS_RECORD
from common.statistics import WITHHELD, is_statistic

log = logging.getLogger(__name__)

LEDGER_FAILED = 102  # error code when the ledger cannot be written (Flower reserves small codes)

_ROUND_METRICS = ("num-examples", "train-loss", "train-seconds", "train-steps-per-s", "dice")
ALLOWED_METRICS = (
    frozenset(_ROUND_METRICS)
    | {INCOMING_PREFIX + name for name in _ROUND_METRICS}
    | frozenset(SCORES)  # a federated evaluation's scores (common.evaluation), of its local-only model too
    | {prefix + name for _, prefix in SITE_KINDS.values() for name in SCORES}
)
# Flower's legacy layout of a training reply (what secaggplus_mod reads and then masks).
_LEGACY_PARAMETERS, _LEGACY_METRICS = "fitres.parameters", "fitres.metrics"
_LEGACY_COUNT, _LEGACY_STATUS = "fitres.num_examples", "fitres.status"
_SECAGG_FIELDS = frozenset(value for name, value in vars(Key).items() if name.isupper())
# What the next round's set-up and key-share stages answer (client/secure.py): keys, no data.
_KEY_EXCHANGE_FIELDS = frozenset({Key.PUBLIC_KEY_1, Key.PUBLIC_KEY_2, Key.DESTINATION_LIST, Key.CIPHERTEXT_LIST})

ModelSpec = dict[str, tuple[tuple[int, ...], str]]


class EgressRefused(InsiteError):
    """A reply held something a site must not send."""


@cache
def _spec_for(model_json: str) -> tuple[tuple[str, tuple[int, ...], str], ...]:
    import torch  # noqa: PLC0415  (lazy: the SecAgg+ key-exchange stages never carry tensors)

    from common.model import build_model  # noqa: PLC0415

    with torch.device("meta"):
        model = build_model(ModelSettings.model_validate_json(model_json))
    return tuple((name, tuple(t.shape), str(t.dtype).removeprefix("torch.")) for name, t in model.state_dict().items())


def model_spec(settings: ModelSettings) -> ModelSpec:
    """Name -> (shape, dtype) of every tensor of the run's model, in state-dict order."""
    return {name: (shape, dtype) for name, shape, dtype in _spec_for(settings.model_dump_json())}


def _check_tensor(where: str, array: Array, shape: tuple[int, ...], dtype: str) -> None:
    values = array.numpy()
    if values.shape != shape or values.dtype.name != dtype:
        raise EgressRefused(
            f"{where} is {values.dtype.name}{list(values.shape)}, the model's tensor is {dtype}{list(shape)}"
        )
    if values.dtype.kind in "fc" and not np.isfinite(values).all():
        raise EgressRefused(f"{where} holds NaN or infinite values")


def _check_tensors(key: str, record: Iterable[tuple[str, Array]], spec: ModelSpec, positional: bool) -> None:
    items = list(record)
    if positional and not items:
        return  # secaggplus_mod empties the plaintext parameters once they are masked
    expected = list(spec.items())
    names = [name for name, _ in items]
    if positional:
        if len(items) != len(expected):
            raise EgressRefused(f"'{key}' holds {len(items)} tensors, the model has {len(expected)}")
        pairs = zip(items, expected, strict=True)
        for (position, array), (name, (shape, dtype)) in pairs:
            _check_tensor(f"'{key}' tensor {position} ({name})", array, shape, dtype)
        return
    unknown = [name for name in names if name not in spec]
    missing = [name for name in spec if name not in names]
    if unknown or missing:
        raise EgressRefused(f"'{key}' tensors differ from the model's: unknown {unknown[:3]}, missing {missing[:3]}")
    for name, array in items:
        shape, dtype = spec[name]
        _check_tensor(f"'{key}' tensor '{name}'", array, shape, dtype)


def _check_metrics(key: str, record: MetricRecord | ConfigRecord, site: str) -> None:
    for name, value in record.items():
        if name == SITE_METRIC and isinstance(record, ConfigRecord):
            if value != site:
                raise EgressRefused(f"'{key}' names site {value!r}, this site is {site!r}")
            continue
        if name not in ALLOWED_METRICS:
            raise EgressRefused(
                f"metric '{name}' in '{key}' is not on the allow-list ({', '.join(sorted(ALLOWED_METRICS))})"
            )
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise EgressRefused(f"metric '{name}' in '{key}' is a {type(value).__name__}, not a single number")
        if not math.isfinite(value):
            raise EgressRefused(f"metric '{name}' in '{key}' is not finite")


def _check_config(key: str, record: ConfigRecord, site: str) -> None:
    if key == "site":
        if dict(record) != {"name": site}:
            raise EgressRefused(f"'site' record must hold only this site's name, got {sorted(record)}")
    elif key == _LEGACY_METRICS:
        _check_metrics(key, record, site)
    elif key == _LEGACY_STATUS:
        if set(record) != {"code", "message"} or record["code"] != 0:
            raise EgressRefused(f"'{key}' is not a plain success status")
    elif key == RECORD_KEY_CONFIGS:
        unknown = sorted(set(record) - _SECAGG_FIELDS)
        if unknown:
            raise EgressRefused(f"SecAgg+ reply carries fields outside the protocol: {unknown}")
    elif key == NEXT_ROUND_RECORD:
        unknown = sorted(set(record) - _KEY_EXCHANGE_FIELDS)
        if unknown:
            raise EgressRefused(f"the next round's SecAgg+ key exchange carries fields outside it: {unknown}")
    else:
        raise EgressRefused(f"record '{key}' is not part of a round's reply")


def _check_statistics(record: MetricRecord, min_count: int) -> None:
    for name, value in record.items():
        if not is_statistic(name):
            raise EgressRefused(f"'{name}' in '{STATISTICS_RECORD}' is not in the statistics vocabulary")
        if isinstance(value, bool) or not isinstance(value, int):
            raise EgressRefused(f"statistic '{name}' is a {type(value).__name__}, not a count")
        if value < WITHHELD or 0 < value < min_count:
            raise EgressRefused(f"statistic '{name}' = {value} is below the minimum count {min_count} yet not withheld")


def check_reply(content: RecordDict, settings: ModelSettings, site: str, stats: StatsSettings | None = None) -> None:
    """Raise :class:`EgressRefused` naming the first field the site must not send.

    A statistics record passes only where ``stats`` (the run's statistics settings) is given.
    """
    for key, array_record in content.array_records.items():
        if key not in ("arrays", _LEGACY_PARAMETERS):
            raise EgressRefused(f"array record '{key}' is not part of a round's reply")
        _check_tensors(key, array_record.items(), model_spec(settings), positional=key == _LEGACY_PARAMETERS)
    for key, metric_record in content.metric_records.items():
        if key == _LEGACY_COUNT:
            if set(metric_record) != {"num_examples"}:
                raise EgressRefused(f"'{key}' must hold only num_examples")
            _check_metrics(key, MetricRecord({"num-examples": metric_record["num_examples"]}), site)
        elif key == "metrics":
            _check_metrics(key, metric_record, site)
        elif key == STATISTICS_RECORD and stats is not None:
            _check_statistics(metric_record, stats.min_count)
        else:
            raise EgressRefused(f"metric record '{key}' is not part of a round's reply")
    for key, config_record in content.config_records.items():
        _check_config(key, config_record, site)


def _site_name(context: Context) -> str:
    return str(context.node_config.get("site-name", "unknown site"))


def egress_guard_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Let a reply leave only if :func:`check_reply` accepts it; otherwise raise, naming the field.

    Raising (rather than returning an error reply) is what lets the guard sit inside
    ``secaggplus_mod``, which would otherwise mask whatever it was handed.
    """
    reply = call_next(msg, context)
    if reply.has_error():
        return reply
    site = _site_name(context)
    try:
        settings = from_run_config(context.run_config)
        stats = None
        if msg.metadata.message_type == STATISTICS_QUERY:
            stats = settings.stats.at_site(SiteContext.from_node_config(context.node_config).stats_min_count)
        check_reply(reply.content, settings.model, site, stats)
    except InsiteError as error:
        raise EgressRefused(f"site {site}: egress guard refused the reply: {error}") from None
    return reply


def _describe(msg: Message, reply: Message, stage: str | None) -> tuple[str, str]:
    """(kind, plain words) for the ledger: what an auditor needs to know about this reply."""
    if reply.has_error():
        return "error", f"error report instead of a result: {reply.error.reason}"
    kind = msg.metadata.message_type + (f"/secagg+ {stage}" if stage else "")
    parts = []
    content = reply.content
    secagg = content.config_records.get(RECORD_KEY_CONFIGS)
    if secagg is not None and Key.MASKED_PARAMETERS in secagg:
        parts.append(
            # cast: SecAgg+ sends the masked update as a list of byte vectors; ConfigRecord types any value
            f"masked model update ({len(cast(list[bytes], secagg[Key.MASKED_PARAMETERS]))} vectors; "
            "only the sum over sites can be unmasked)"
        )
    elif secagg is not None:
        parts.append(f"SecAgg+ protocol fields {sorted(secagg)} (keys and key shares, no data)")
    upcoming = content.config_records.get(NEXT_ROUND_RECORD)
    if upcoming is not None:
        parts.append(f"the next round's SecAgg+ fields {sorted(upcoming)} (keys and key shares, no data)")
    for record in content.array_records.values():
        shapes = tensor_shapes(record)  # the reply as it leaves: its weights packed (client/packing.py)
        if shapes:
            values = sum(int(np.prod(shape)) for shape in shapes)
            parts.append(f"model weights: {len(shapes)} tensors, {values:,} numbers")
    # cast: the egress guard (inside this mod) let only numbers through; a record types any value
    metrics = {
        name: cast(float, value)
        for key in ("metrics", _LEGACY_METRICS)
        for name, value in content.get(key, {}).items()
        if name != SITE_METRIC
    }
    if metrics:
        parts.append("metrics " + ", ".join(f"{name}={value:.4g}" for name, value in metrics.items()))
    statistics = content.metric_records.get(STATISTICS_RECORD)
    if statistics is not None:
        withheld = sum(value == WITHHELD for value in statistics.values())
        parts.append(f"data statistics: {len(statistics)} binned counts ({withheld} withheld), no per-case value")
    return kind, "; ".join(parts) or "empty reply"


def _payload(reply: Message) -> bytes:
    if reply.has_error():
        return error_to_proto(reply.error).SerializeToString()
    return serialised(reply.content)


def _round_of(msg: Message) -> int | None:
    group = msg.metadata.group_id
    if group.isdigit():
        return int(group)
    config: Mapping[str, ConfigRecordValues] = msg.content.config_records.get("config", {})
    value = config.get("server-round")
    return int(value) if isinstance(value, int) else None


def ledger_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Append every reply that leaves to the site's ledger; if that fails, send nothing.

    The site's outermost layer: it opens the coordinator's envelope (common/message_envelope.py)
    before anything reads the message, and seals the reply, if it was asked so, in an envelope
    made of the very bytes it records. An exception below (a site error, an egress refusal, an
    envelope it cannot open) becomes here the error reply Flower would have made of it, so that
    the ledger holds the exact bytes that leave.
    """
    asked_enveloped = is_enveloped(msg.content)
    try:
        msg.content = opened(msg.content, "the coordinator")
        secagg = msg.content.config_records.get(RECORD_KEY_CONFIGS)
        stage = str(secagg[Key.STAGE]) if secagg and Key.STAGE in secagg else None
        reply = call_next(msg, context)  # secaggplus_mod pops the stage: it was read before
        kind, detail = _describe(msg, reply, stage)
    except Exception as error:
        log.exception("the site's app failed")
        reply = Message(
            Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=f"{type(error)}:<'{error}'>"), reply_to=msg
        )
        kind = "refused" if isinstance(error, EgressRefused) else "error"
        detail = f"error report instead of a result: {error}"
    payload = _payload(reply)
    try:
        cache = SiteContext.from_node_config(context.node_config).cache_path
        Ledger(cache).append(
            run=msg.metadata.run_id, round_number=_round_of(msg), kind=kind, payload=payload, detail=detail
        )
    except (OSError, ValueError, InsiteError) as error:
        reason = f"site {_site_name(context)}: the egress ledger cannot be written ({error}); nothing was sent"
        log.error("%s", reason)
        return Message(Error(code=LEDGER_FAILED, reason=reason), reply_to=msg)
    if asked_enveloped and reply.has_content() and len(payload) <= LIMIT:
        reply.content = sealed(payload)
    return reply
