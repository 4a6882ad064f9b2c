"""Flower's Message-API strategies, chosen and parameterised from :class:`StrategySettings`."""

from __future__ import annotations

from flwr.serverapp.strategy import FedAdam, FedAvg, FedAvgM, FedProx, FedYogi, Strategy

from common.config import RunSettings


def build_strategy(settings: RunSettings) -> Strategy:
    """Every connected site trains and evaluates each round; ``min_sites`` must be connected."""
    common = {
        "fraction_train": 1.0,
        "fraction_evaluate": 1.0,
        "min_train_nodes": settings.min_sites,
        "min_evaluate_nodes": settings.min_sites,
        "min_available_nodes": settings.min_sites,
    }
    options = settings.strategy
    match options.name:
        case "fedavg":
            return FedAvg(**common)
        case "fedprox":
            return FedProx(**common, proximal_mu=options.proximal_mu)
        case "fedavgm":
            return FedAvgM(**common, server_learning_rate=options.server_learning_rate,
                           server_momentum=options.server_momentum)
        case "fedadam":
            return FedAdam(**common, eta=options.eta, eta_l=settings.training.learning_rate,
                           tau=options.tau)
        case "fedyogi":
            return FedYogi(**common, eta=options.eta, eta_l=settings.training.learning_rate,
                           tau=options.tau)
    raise AssertionError(f"unhandled strategy {options.name}")  # pydantic restricts the names
