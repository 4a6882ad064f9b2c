"""The coordinator's half of FedDyn (Acar et al., ICLR 2021); the sites' half is :mod:`client.drift`.

Each round the coordinator keeps ``h``, the running sum of how far the sites' average moved the
model, and corrects the average by it::

    h      <- h - alpha * (mean(w_site) - w_sent)
    w_next  = mean(w_site) - h / alpha

It needs the sites' average and nothing else: under SecAgg+ that is the unmasked sum it already
gets, so drift correction sends no extra per-site state, masked or in the clear. ``h`` lives in
this process; a coordinator that is restarted mid-run (a resume) starts it again from zero, as
Flower's FedAdam/FedAvgM restart their moments, and the sites' terms pull it back within rounds.
The correction applies to the model's trainable parameters (the tensors the sites' regulariser
covers); buffers are averaged as FedAvg averages them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg


class FedDyn(FedAvg):
    """FedAvg's weighted average, corrected by the dynamic regulariser's server state."""

    def __init__(self, *, alpha: float, parameter_names: list[str], **selection: Any) -> None:
        super().__init__(**selection)
        self.alpha = alpha
        self.parameter_names = parameter_names
        self.sent: dict[str, torch.Tensor] = {}
        self.h: dict[str, torch.Tensor] = {}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.sent = arrays.to_torch_state_dict()
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        averaged, metrics = super().aggregate_train(server_round, replies)
        if averaged is None:
            return averaged, metrics
        weights = averaged.to_torch_state_dict()
        for name in self.parameter_names:
            moved = weights[name] - self.sent[name]
            self.h[name] = self.h.get(name, torch.zeros_like(moved)) - self.alpha * moved
            weights[name] = weights[name] - self.h[name] / self.alpha
        return ArrayRecord(weights), metrics
