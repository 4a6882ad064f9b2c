"""The site's local-only model: what the site would have had without the federation.

A federated evaluation compares the consensus model with each site's own model, trained at home
on the site's training cases with the same recipe and compute as its share of the federation
(the run's rounds x local steps, a fresh Adam each round, the same seed). It is kept in the site's
cache folder and never sent; when the coordinator asks (``evaluate.local_only``), only its scores
on the site's held-out cases leave, named ``local-only-...`` (:mod:`client.egress` allows them).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from pathlib import Path

import torch

from client.local_round import SiteRound
from client.site import SiteContext
from common.errors import SiteDataError
from common.evaluation import LOCAL_ONLY_PREFIX
from common.files import atomic_write
from common.model import build_model
from common.settings import RunSettings, StrategySettings

log = logging.getLogger(__name__)


def model_path(site: SiteContext) -> Path:
    return site.cache_path / "local-only" / "model.pt"


def train_local_only(
    site: SiteContext, settings: RunSettings, on_round: Callable[[int], None] = lambda number: None
) -> Path:
    """Train ``settings.rounds`` x ``local_steps`` steps on the site's own cases; keep the model at the site.

    Plain local training: a federated strategy's drift terms (FedProx, FedDyn) have no global
    model to hold a lone site to.
    """
    settings = settings.model_copy(update={"strategy": StrategySettings()})
    path = model_path(site)
    path.unlink(missing_ok=True)  # a failed training must not leave an earlier model to be scored as this one
    torch.manual_seed(settings.seed)
    weights = build_model(settings.model).state_dict()
    job = SiteRound.prepare(site, settings)
    for round_number in range(1, settings.rounds + 1):
        weights, _ = job.train(weights, round_number)
        on_round(round_number)
    buffer = io.BytesIO()
    torch.save({"weights": weights, "settings": settings.canonical_json()}, buffer)
    atomic_write(path, buffer.getvalue(), mode=0o600)
    log.info("site %s: local-only model (%d rounds) kept in %s", site.name, settings.rounds, path)
    return path


def score_local_only(site: SiteContext) -> dict[str, float]:
    """The local-only model's scores on the held-out cases, as ``local-only-<score>`` metrics."""
    path = model_path(site)
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        settings = RunSettings.model_validate_json(saved["settings"])
    except FileNotFoundError:
        raise SiteDataError(f"no local-only model in {path}; train one with 'insite site train-local'") from None
    except Exception as error:  # torch and pydantic raise many types for a damaged file
        raise SiteDataError(f"{path} is not a readable local-only model ({error})") from None
    scores = SiteRound.prepare(site, settings).evaluate_held_out(saved["weights"])
    return {LOCAL_ONLY_PREFIX + name: value for name, value in scores.items()}
