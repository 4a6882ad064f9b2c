"""The site's half of secure aggregation (SecAgg+): the update leaves the site only masked.

Flower's SecAgg+ exists only for its legacy message layout (``fitins``/``fitres``), so training
under secure aggregation goes through a legacy ``ClientApp`` with ``secaggplus_mod``; the site's
work is the same :class:`client.local_round.SiteRound` as in the plain path. The protocol runs
four train messages per round (set-up, key shares, masked update, unmasking); only the third
trains, which is why this module and ``client.app`` import the ML stack lazily: the other three
start a fresh process each and should not pay for importing torch and MONAI.

Masking works on values clipped to ``+-clipping_range`` and quantised; a model weight beyond the
range would be silently distorted, so the site refuses to send such a model instead. The masked
vectors leave as uint32, not Flower's int64 (common/masked_update.py).
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
from flwr.app import Context, Message
from flwr.client import Client, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key

from client.egress import egress_guard_mod
from client.site import SiteContext
from common.errors import InsiteError, SiteDataError
from common.masked_update import narrowed
from common.protocol import EVALUATE_INCOMING, RUN_KEY, SITE_METRIC
from common.settings import RunSettings, from_run_config


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
    """Legacy-API view of the site: ``fit`` = score the incoming model, train, return weights."""

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
            new_weights, metrics = job.score_and_train(
                weights,
                int(config["server-round"]),
                bool(config.get(EVALUATE_INCOMING, False)),
                str(config.get(RUN_KEY, "")),
            )
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


# The guard inside secaggplus_mod checks the update before it is masked (client/egress.py).
secure_app = ClientApp(client_fn=_client, mods=[narrow_masked_update_mod, secaggplus_mod, egress_guard_mod])
