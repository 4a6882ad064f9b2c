"""The coordinator's check of every site update before it is aggregated (plain aggregation).

A site's own egress guard (client/egress.py) already refuses to send anything but the model's
tensors; a modified site could bypass it. So the coordinator checks each reply too, and one that
fails is left out of the round with the reason, naming the site, instead of poisoning the
average: the right tensor names, shapes and dtypes, every value finite, a sane case count, and an
update (its distance from the global model) no longer than ``max_update_norm``.

Under SecAgg+ the coordinator never sees one site's update, only the masked sum; there each site
clips every value to ``aggregation.clipping_range`` before masking, which bounds what one site can
move the average (see configs/federation.toml).
"""

from __future__ import annotations

import math

import numpy as np
from flwr.app import ArrayRecord, Message

# What the round loop records of every training reply besides its case count.
TRAINING_METRICS = ("train-loss", "train-seconds")


def update_problem(reply: Message, reference: ArrayRecord, max_update_norm: float) -> str | None:
    """Why ``reply``'s update must not be aggregated; None when it may."""
    arrays = reply.content.array_records
    if list(arrays) != ["arrays"]:
        return f"expected one array record 'arrays', got {sorted(arrays) or 'none'}"
    update = arrays["arrays"]
    if list(update) != list(reference):
        missing, extra = set(reference) - set(update), set(update) - set(reference)
        return f"tensor names differ from the model's (missing {sorted(missing)[:3]}, extra {sorted(extra)[:3]})"
    squared = 0.0
    for name in reference:
        got, expected = update[name], reference[name]
        if tuple(got.shape) != tuple(expected.shape) or got.dtype != expected.dtype:
            shown = f"{got.dtype}{list(got.shape)}"
            return f"tensor '{name}' is {shown}, the model's is {expected.dtype}{list(expected.shape)}"
        values = got.numpy()
        if not np.isfinite(values).all():
            return f"tensor '{name}' holds NaN or infinite values"
        squared += float(np.sum((values.astype(np.float64) - expected.numpy().astype(np.float64)) ** 2))
    norm = math.sqrt(squared)
    if norm > max_update_norm:
        return f"the update moves the model by {norm:.3g} (L2), beyond max_update_norm {max_update_norm:g}"
    metrics = reply.content.metric_records.get("metrics")
    cases = metrics.get("num-examples") if metrics is not None else None
    if not isinstance(cases, int | float) or not math.isfinite(cases) or cases <= 0:
        return f"its case count (num-examples) is {cases!r}, not a positive number"
    for key in TRAINING_METRICS:
        value = metrics.get(key) if metrics is not None else None
        if not isinstance(value, int | float) or not math.isfinite(value):
            return f"its metric '{key}' is {value!r}, not a number"
    return None
