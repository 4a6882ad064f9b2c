"""Terms a site adds to its training loss so that its model does not drift off towards its own data.

- FedProx (Li et al., MLSys 2020): ``mu/2 ||w - w_global||^2`` pulls the site's model back
  towards the global model it started the round from.
- FedDyn (Acar et al., ICLR 2021, "Federated Learning Based on Dynamic Regularization"): the
  same pull with weight ``alpha`` plus a linear term ``-<g, w>`` that the site learns round by
  round, ``g <- g - alpha (w_site - w_global)``, so that at the fixed point a site's optimum is the
  global one. ``g`` is the site's between-round state (:mod:`client.site_state`): it stays in the
  site's cache and never leaves. The coordinator's half (:mod:`server.feddyn`) needs only the
  average of the sites' models, which is exactly what secure aggregation gives it, so FedDyn
  adds nothing to what travels, masked or not.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from client.site_state import SiteState

Penalty = Callable[[torch.nn.Module], torch.Tensor]
FEDDYN_STATE = "feddyn"
ROUNDS_KEPT = "(rounds)"  # beside the parameters' terms (no parameter has this name): the rounds they hold


def starting_point(model: torch.nn.Module) -> list[torch.Tensor]:
    """The model's parameters as the round received them (the global model)."""
    return [parameter.detach().clone() for parameter in model.parameters()]


def proximal(start: list[torch.Tensor], mu: float) -> Penalty:
    def penalty(model: torch.nn.Module) -> torch.Tensor:
        drift = sum(((w - g) ** 2).sum() for w, g in zip(model.parameters(), start, strict=True))
        return 0.5 * mu * torch.as_tensor(drift)

    return penalty


class DynamicRegulariser:
    """A site's FedDyn term for one round: built from its saved state, saved again after training."""

    def __init__(self, model: torch.nn.Module, state: SiteState, alpha: float) -> None:
        self.state, self.alpha = state, alpha
        self.start = starting_point(model)
        saved = state.load(FEDDYN_STATE) or {}
        self.rounds: list[int] = saved[ROUNDS_KEPT].tolist() if ROUNDS_KEPT in saved else []
        self.names = [name for name, _ in model.named_parameters()]
        self.linear = [
            saved[name].to(parameter.device) if name in saved else torch.zeros_like(parameter)
            for name, parameter in model.named_parameters()
        ]
        self._pull = proximal(self.start, alpha)

    def penalty(self, model: torch.nn.Module) -> torch.Tensor:
        inner = sum((g * w).sum() for g, w in zip(self.linear, model.parameters(), strict=True))
        return self._pull(model) - torch.as_tensor(inner)

    def remember(self, model: torch.nn.Module, round_number: int) -> None:
        """After training: ``g <- g - alpha (w_site - w_global)``, kept for the site's next round."""
        updated = {
            name: (g - self.alpha * (w.detach() - start)).cpu()
            for name, g, w, start in zip(self.names, self.linear, model.parameters(), self.start, strict=True)
        }
        updated[ROUNDS_KEPT] = torch.tensor([*self.rounds, round_number])
        self.state.save(FEDDYN_STATE, updated)
