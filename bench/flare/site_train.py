"""FLARE Client API script: one demo site's FedAvg rounds, trained by insite's own code.

FLARE runs this in each simulated client (in process: the Client API's default), the site's name
being the FLARE client's. Each round does what an insite site does in
``client.local_round.SiteRound.score_and_train`` under plain FedAvg, with the same functions: score
the incoming global model on the site's validation cases (from round 2 on, as insite's coordinator
asks), then a fresh Adam at the round's learning rate and ``local_steps`` steps of
``client.training.train_steps`` on the site's seeded crops. ``SiteRound`` itself is not imported:
its module needs Flower, which this environment does not have.

The training time sent back (metric ``train-seconds``) is the time of the ``train_steps`` loop,
the number insite's sites report, so "round / slowest site's training" means the same on both sides;
the result's meta adds the site's whole work in the round and when the client was ready.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import nvflare.client as flare
import torch
from nvflare.apis.fl_constant import FLMetaKey

from client.data import SiteDataset
from client.site import SiteContext
from client.training import endless, evaluate_cases, make_optimizer, train_steps
from common.device import Compute, select_compute
from common.model import build_model, spatial_multiple
from common.settings import RunSettings


def load(settings: RunSettings, weights: dict, compute: Compute) -> torch.nn.Module:
    """insite's model holding the global weights; ``as_tensor`` takes them as FLARE's exchange format gives them."""
    model = build_model(settings.model)
    model.load_state_dict({name: torch.as_tensor(value) for name, value in weights.items()})
    return model.to(compute.device)


def score(model: torch.nn.Module, data: SiteDataset, compute: Compute, patch_size: int) -> float:
    """Mean foreground Dice on the site's validation cases, as ``SiteRound.evaluate``."""
    scores = evaluate_cases(model, data.val_dataset(), compute, patch_size)
    return sum(case.dice for case in scores) / len(scores)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--settings", type=Path, required=True, help="RunSettings as JSON")
    parser.add_argument("--sites", type=Path, required=True, help="folder holding <site>/data and <site>/cache")
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args()
    settings = RunSettings.model_validate_json(args.settings.read_text())
    training = settings.training

    flare.init()
    name = flare.get_site_name()
    site = SiteContext(name, args.sites / name / "data", args.sites / name / "cache", "auto", args.threads)
    torch.set_num_threads(site.threads)
    compute = select_compute(site.device, training.mixed_precision)  # type: ignore[arg-type]
    data = SiteDataset(site.name, site.data_path, site.cache_path, spatial_multiple(settings.model))
    ready_at = time.time()

    while flare.is_running():
        incoming = flare.receive()
        received = time.perf_counter()
        round_number = incoming.current_round + 1  # FLARE counts rounds from 0, insite from 1
        model = load(settings, incoming.params, compute)
        metrics = {"incoming-dice": score(model, data, compute, training.patch_size)} if round_number > 1 else {}
        optimizer = make_optimizer(model, training.learning_rate_at(round_number, settings.rounds))
        loader = data.train_loader(training.batch_size, training.patch_size, site.seed(settings.seed, round_number))
        result = train_steps(model, endless(loader), training.local_steps, optimizer, compute)
        metrics.update(
            {
                "num-examples": float(len(data.split("train"))),
                "train-loss": result.mean_loss,
                "train-seconds": result.seconds,
            }
        )
        flare.send(
            flare.FLModel(
                params={key: value.detach().cpu() for key, value in model.state_dict().items()},
                metrics=metrics,
                meta={
                    FLMetaKey.NUM_STEPS_CURRENT_ROUND: result.steps,
                    "site": name,
                    "ready_at": ready_at,  # when this client had its data, before its first round
                    "work_seconds": time.perf_counter() - received,  # the site's whole round: load, score, train
                },
            )
        )


if __name__ == "__main__":
    main()
