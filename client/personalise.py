"""The site's own adapted model: the consensus model fine-tuned on the site's training cases.

A consensus model serves the sites on average; a site whose scanners or lesions differ from the
others' can do better with a model adapted to itself. In a federated evaluation
(``evaluate.personalised``) each site takes the model the message carries and trains it
``personalise_steps`` more steps on its own training cases, with a fresh Adam at
``personalise_lr_fraction`` of the run's starting rate (the rate the federation ended on adapts
too little in that many steps; the starting rate would retrain). It keeps the adapted model in its
cache folder and sends only its scores on its held-out cases, prefixed ``personalised-``. The
adapted model never leaves the site.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import torch

from client.local_round import SiteRound
from client.site import SiteContext
from client.training import endless, make_optimizer, train_steps
from common.evaluation import PERSONALISED_PREFIX
from common.files import atomic_write

log = logging.getLogger(__name__)


def model_path(site: SiteContext) -> Path:
    return site.cache_path / "personalised" / "model.pt"


def personalise(job: SiteRound, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``weights`` adapted to the site's training cases; kept at the site, returned for scoring."""
    training, settings = job.settings.training, job.settings
    model = job.model(weights)
    optimizer = make_optimizer(model, training.learning_rate * training.personalise_lr_fraction)
    loader = job.data.train_loader(training.batch_size, training.patch_size, job.site.seed(settings.seed, 0))
    result = train_steps(model, endless(loader), training.personalise_steps, optimizer, job.compute)
    adapted = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save({"weights": adapted, "settings": settings.canonical_json()}, buffer)
    atomic_write(model_path(job.site), buffer.getvalue(), mode=0o600)
    log.info(
        "site %s: consensus model adapted in %d steps (%.1fs), kept in %s",
        job.site.name,
        result.steps,
        result.seconds,
        model_path(job.site),
    )
    return adapted


def score_personalised(job: SiteRound, weights: dict[str, torch.Tensor]) -> dict[str, float]:
    """The adapted model's scores on the site's held-out cases, as ``personalised-<score>`` metrics."""
    scores = job.evaluate_held_out(personalise(job, weights))
    return {PERSONALISED_PREFIX + name: value for name, value in scores.items()}
