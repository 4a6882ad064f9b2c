"""Flower's Message-API strategies, chosen and parameterised from :class:`StrategySettings`."""

from __future__ import annotations

from typing import TypedDict

from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedProx,
    FedYogi,
    Strategy,
)

from common.model import build_model
from common.settings import RunSettings
from server.feddyn import FedDyn


def build_strategy(settings: RunSettings) -> Strategy:
    """The configured strategy, wrapped for differential privacy when the run asks for it.

    With DP each site clips its own update (client.local_round.clip_update) and the wrapper adds
    Gaussian noise to the aggregate: the form that composes with secure aggregation, where the
    coordinator never holds an individual update it could clip. The noise is calibrated to
    ``min_sites`` sites, so more sites taking part only adds margin.
    """
    strategy = _base_strategy(settings)
    privacy = settings.privacy
    if not privacy.differential_privacy:
        return strategy
    return DifferentialPrivacyClientSideFixedClipping(
        strategy,
        noise_multiplier=privacy.noise_multiplier,
        clipping_norm=privacy.clipping_norm,
        num_sampled_clients=settings.min_sites,
    )


class SiteSelection(TypedDict):
    """The strategy arguments that pick the sites of a round (the round loop sets who is online)."""

    fraction_train: float
    fraction_evaluate: float
    min_train_nodes: int
    min_evaluate_nodes: int
    min_available_nodes: int


def _base_strategy(settings: RunSettings) -> Strategy:
    """Every connected site trains and evaluates each round; ``min_sites`` must be connected."""
    sites = settings.min_sites
    common = SiteSelection(
        fraction_train=1.0,
        fraction_evaluate=1.0,
        min_train_nodes=sites,
        min_evaluate_nodes=sites,
        min_available_nodes=sites,
    )
    options = settings.strategy
    match options.name:
        case "fedavg":
            return FedAvg(**common)
        case "fedprox":
            return FedProx(**common, proximal_mu=options.proximal_mu)
        case "fedavgm":
            return FedAvgM(
                **common, server_learning_rate=options.server_learning_rate, server_momentum=options.server_momentum
            )
        case "fedadam":
            return FedAdam(**common, eta=options.eta, eta_l=settings.training.learning_rate, tau=options.tau)
        case "fedyogi":
            return FedYogi(**common, eta=options.eta, eta_l=settings.training.learning_rate, tau=options.tau)
        case "feddyn":
            names = [name for name, _ in build_model(settings.model).named_parameters()]
            return FedDyn(**common, alpha=options.feddyn_alpha, parameter_names=names)
    raise AssertionError(f"unhandled strategy {options.name}")  # pydantic restricts the names
