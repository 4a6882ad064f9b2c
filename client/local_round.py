"""One round's work at a site, given the global weights: train, or evaluate.

Flower-free on purpose (the ClientApp converts records). Each round starts a fresh Adam: after
averaging, a site's old moment estimates describe a model that no longer exists; measured on the
demo's three sites (in-process FedAvg, 10 rounds x 40 steps), fresh Adam reached Dice 0.677 where
Adam state kept on the site's disk between rounds reached 0.626, swinging between sites.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from client.data import SiteDataset
from client.drift import DynamicRegulariser, Penalty, proximal, starting_point
from client.incoming_score import incoming_metrics
from client.site import SiteContext
from client.site_state import SiteState
from client.training import endless, evaluate_cases, make_optimizer, train_steps
from common.device import Compute, select_compute
from common.errors import SiteDataError
from common.model import build_model, spatial_multiple
from common.settings import RunSettings
from common.weights import check_compatible

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SiteRound:
    """Everything one round at one site needs, built once per ClientApp process."""

    site: SiteContext
    settings: RunSettings
    compute: Compute
    data: SiteDataset

    @classmethod
    def prepare(cls, site: SiteContext, settings: RunSettings) -> SiteRound:
        if site.threads > 0:
            torch.set_num_threads(site.threads)
        compute = select_compute(site.device, settings.training.mixed_precision)  # type: ignore[arg-type]
        data = SiteDataset(site.name, site.data_path, site.cache_path, spatial_multiple(settings.model))
        return cls(site, settings, compute, data)

    def parameter_names(self) -> list[str]:
        """The model's tensor names in state-dict order (legacy messages carry bare lists)."""
        return list(build_model(self.settings.model).state_dict())

    def model(self, weights: dict[str, torch.Tensor], in_place: bool = False) -> torch.nn.Module:
        """The run's network holding ``weights``: copied, or with ``in_place`` the tensors themselves."""
        model = build_model(self.settings.model)
        check_compatible(model.state_dict(), weights, f"site {self.site.name}: global model")
        model.load_state_dict(weights, assign=in_place)
        return model.to(self.compute.device)

    def train(
        self, weights: dict[str, torch.Tensor], round_number: int, run_key: str = "", in_place: bool = False
    ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """Train ``local_steps`` steps from ``weights``; returns new weights and scalar metrics.

        ``run_key`` names the run whose between-round state (FedDyn's) this site keeps. With
        ``in_place`` a model on the CPU trains in ``weights``' own tensors, which then hold the
        trained values: for a caller that has no further use for them, a model held once instead
        of twice (a 100M-parameter model is 400 MB; a GPU trains its own copy anyway).
        Differential privacy still trains a copy: its clipping needs the weights it started from.
        """
        training = self.settings.training
        privacy = self.settings.privacy
        model = self.model(weights, in_place and not privacy.differential_privacy)
        optimizer = make_optimizer(model, training.learning_rate_at(round_number, self.settings.rounds))
        strategy = self.settings.strategy
        penalty: Penalty | None = None
        dynamic: DynamicRegulariser | None = None
        if strategy.name == "fedprox":
            penalty = proximal(starting_point(model), strategy.proximal_mu)
        elif strategy.name == "feddyn":
            dynamic = DynamicRegulariser(model, SiteState(self.site.cache_path, run_key), strategy.feddyn_alpha)
            penalty = dynamic.penalty
            log.info(
                "site %s round %d: FedDyn term of this run kept from rounds %s",
                self.site.name,
                round_number,
                dynamic.rounds or "none (the site's first round in it)",
            )
        loader = self.data.train_loader(
            training.batch_size, training.patch_size, self.site.seed(self.settings.seed, round_number)
        )
        result = train_steps(model, endless(loader), training.local_steps, optimizer, self.compute, penalty)
        if dynamic is not None:
            dynamic.remember(model, round_number)
        log.info(
            "site %s round %d: %d steps in %.1fs on %s, loss %.4f",
            self.site.name,
            round_number,
            result.steps,
            result.seconds,
            self.compute.describe(),
            result.mean_loss,
        )
        metrics = {
            "num-examples": float(len(self.data.split("train"))),
            "train-loss": result.mean_loss,
            "train-seconds": result.seconds,
            "train-steps-per-s": result.steps_per_second,
        }
        trained = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        if privacy.differential_privacy:
            trained = clip_update(weights, trained, privacy.clipping_norm)
        return trained, metrics

    def score_and_train(
        self, weights: dict[str, torch.Tensor], round_number: int, score_incoming: bool, run_key: str
    ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """Score the incoming global model (when asked), then train from it.

        Scoring here spares a separate evaluate exchange per round (a process start and two polls
        per site); the coordinator files the score, prefixed ``incoming-``, under the previous round.
        ``weights`` may end up holding the trained values.
        """
        incoming = self.evaluate(weights) if score_incoming else {}
        new_weights, metrics = self.train(weights, round_number, run_key, in_place=True)
        metrics.update(incoming_metrics(incoming))
        return new_weights, metrics

    def evaluate(self, weights: dict[str, torch.Tensor]) -> dict[str, float]:
        """Mean foreground Dice of ``weights`` on the site's held-out validation cases."""
        val = self.data.split("val")
        if not val:
            return {"num-examples": 0.0, "dice": 0.0}
        scores = evaluate_cases(
            self.model(weights), self.data.val_dataset(), self.compute, self.settings.training.patch_size
        )
        return {"num-examples": float(len(val)), "dice": sum(score.dice for score in scores) / len(scores)}

    def evaluate_held_out(self, weights: dict[str, torch.Tensor]) -> dict[str, float]:
        """Case count, mean Dice and mean HD95 of ``weights`` for a federated evaluation (``insite coord evaluate``).

        HD95 is left out of the rounds' scoring, not for its cost (within noise of inference,
        ``python -m bench.evaluation_cost``) but so that training needs no scipy and a round's reply
        stays what sites approved. In training a site may hold only training cases; a model
        comparison that silently counted such a site as Dice 0 would be wrong, so here the site
        says why it has no score (the ClientApp puts the site's name before the reason).
        """
        val = self.data.split("val")
        if not val:
            raise SiteDataError(
                f"no validation cases in {self.site.data_path} to score a model on; "
                "hold some out with 'insite site ingest --val-fraction'"
            )
        scores = evaluate_cases(
            self.model(weights), self.data.val_dataset(), self.compute, self.settings.training.patch_size, True
        )
        return {
            "num-examples": float(len(val)),
            "dice": sum(score.dice for score in scores) / len(scores),
            "hd95": sum(score.hd95 or 0.0 for score in scores) / len(scores),
        }


def clip_update(
    before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], bound: float
) -> dict[str, torch.Tensor]:
    """Scale the round's update (after - before) down to L2 norm ``bound`` over all tensors.

    This bounds what one site can move the global model, which the coordinator's Gaussian noise
    is calibrated to; the pre-clipping norm is deliberately not reported (it would leak).
    """
    deltas = {k: after[k].float() - before[k].float().cpu() for k in after}
    squares = sum((d**2).sum() for d in deltas.values())  # the int 0 only for a model without tensors
    norm = float(torch.sqrt(torch.as_tensor(squares)))
    scale = min(1.0, bound / norm) if norm > 0 else 1.0
    return {k: (before[k].float().cpu() + deltas[k] * scale).to(after[k].dtype) for k in after}
