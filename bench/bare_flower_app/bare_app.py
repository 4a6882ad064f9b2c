"""A bare Flower app, built the way Flower's own examples build one: the yardstick for insite's round floor.

Stock Flower throughout, nothing of insite: a ``NumPyClient`` ClientApp behind Flower's
``secaggplus_mod``, and a ServerApp running Flower's ``DefaultWorkflow`` with ``FedAvg`` (and
``SecAggPlusWorkflow`` when the run config sets ``secure``), the only SecAgg+ path Flower 1.42 has
(shared/notes/flower.md). Each site trains the same MONAI UNet as insite's floor run, one optimiser
step on one random patch per round. The ServerApp writes the wall-clock time at the end of every
round to the run config's ``timings`` file (FedAvg's ``evaluate_fn`` runs once before round 1
and once after each round).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from flwr.client import Client, ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.common import Context, NDArrays, Scalar, ndarrays_to_parameters
from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from monai.networks.nets import UNet


def unet(config: dict) -> UNet:
    return UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=2,
        channels=[int(c) for c in str(config["channels"]).split(",")],
        strides=[int(s) for s in str(config["strides"]).split(",")],
        num_res_units=int(config["num-res-units"]),
    )


def arrays(model: UNet) -> NDArrays:
    return [value.detach().cpu().numpy() for value in model.state_dict().values()]


class Site(NumPyClient):
    def __init__(self, config: dict) -> None:
        self.config = config

    def fit(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[NDArrays, int, dict[str, Scalar]]:
        torch.set_num_threads(1)
        model = unet(self.config)
        names = model.state_dict()
        model.load_state_dict({k: torch.from_numpy(np.copy(v)) for k, v in zip(names, parameters, strict=True)})
        edge = int(self.config["patch"])
        image = torch.randn(1, 1, edge, edge, edge)
        label = (image > 0).long()
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
        loss = torch.nn.functional.cross_entropy(model(image), label[:, 0])
        loss.backward()
        optimiser.step()
        return arrays(model), 1, {}


def site(context: Context) -> Client:
    return Site(dict(context.run_config)).to_client()


client = ClientApp(client_fn=site, mods=[secaggplus_mod])
server = ServerApp()


@server.main()
def main(grid: Grid, context: Context) -> None:
    config = dict(context.run_config)
    rounds = int(config["num-server-rounds"])
    stamps: list[float] = []

    def stamp(server_round: int, parameters: NDArrays, fit_config: dict) -> None:
        stamps.append(time.time())

    strategy = FedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=3,
        min_available_clients=3,
        initial_parameters=ndarrays_to_parameters(arrays(unet(config))),
        evaluate_fn=stamp,
    )
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=rounds), strategy=strategy)
    fit = SecAggPlusWorkflow(num_shares=3, reconstruction_threshold=2) if config["secure"] else None
    DefaultWorkflow(fit_workflow=fit)(grid, legacy)
    if config["timings"]:
        Path(str(config["timings"])).write_text(json.dumps([b - a for a, b in zip(stamps, stamps[1:], strict=False)]))
