"""Local training and validation at a site: plain MONAI + PyTorch, no Flower in here.

Kept free of Flower so the same loop runs inside the ClientApp and in the bare benchmark loop,
and so a site can test its hardware without a federation.
"""

from __future__ import annotations

import itertools
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from monai.data import DataLoader, Dataset
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric, HausdorffDistanceMetric
from monai.utils import OptionalImportError

from common.device import Compute
from common.errors import ConfigError


@dataclass(frozen=True)
class TrainResult:
    steps: int
    mean_loss: float
    seconds: float

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else 0.0


def endless(loader: DataLoader) -> Iterator[dict]:
    """Cycle through the loader so a round can ask for any number of steps."""
    return itertools.chain.from_iterable(itertools.repeat(loader))


def make_optimizer(model: torch.nn.Module, learning_rate: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=learning_rate)


def train_steps(
    model: torch.nn.Module,
    batches: Iterator[dict],
    steps: int,
    optimizer: torch.optim.Optimizer,
    compute: Compute,
    penalty: Callable[[torch.nn.Module], torch.Tensor] | None = None,
) -> TrainResult:
    """Run ``steps`` optimizer steps of DiceCE on ``batches``, plus ``penalty(model)`` (client.drift) if given."""
    # Dice over the lesion class only and over the whole batch: with the background in the Dice
    # term and per-sample Dice, small lesions (site-a's) barely move the loss.
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True)
    scaler = torch.amp.GradScaler(compute.device.type) if compute.grad_scaling else None
    model.train()
    total = 0.0
    start = time.perf_counter()
    for _ in range(steps):
        batch = next(batches)
        image = batch["image"].to(compute.device, non_blocking=True)
        label = batch["label"].to(compute.device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with compute.autocast():
            loss = loss_fn(model(image), label)
        if penalty is not None:
            loss = loss + penalty(model)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        total += float(loss.detach())
    if compute.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return TrainResult(steps, total / steps, seconds)


@dataclass(frozen=True)
class CaseScore:
    """One held-out case: foreground Dice, and the 95th-percentile Hausdorff distance (voxels) when asked."""

    dice: float
    hd95: float | None = None


def _hd95(metric: HausdorffDistanceMetric, prediction: torch.Tensor, truth: torch.Tensor) -> float:
    """MONAI's HD95 of one case; where it is undefined, the volume's diagonal (see :func:`evaluate_cases`)."""
    try:
        with warnings.catch_warnings():  # MONAI warns of an empty class; the diagonal below stands in
            warnings.simplefilter("ignore", UserWarning)
            distance = metric(prediction, truth)
    except OptionalImportError as error:
        raise ConfigError(
            f"HD95 needs scipy (MONAI's distance transform): {error}; install insite's dependencies"
        ) from None
    assert isinstance(distance, torch.Tensor)  # a batch tensor in gives a tensor out
    metric.reset()
    if torch.isfinite(distance).any():
        return float(distance[torch.isfinite(distance)].mean())
    return math.dist((0.0,) * 3, tuple(float(edge) for edge in prediction.shape[2:]))


@torch.no_grad()
def evaluate_cases(
    model: torch.nn.Module, dataset: Dataset, compute: Compute, roi_size: int, distance: bool = False
) -> list[CaseScore]:
    """Per-case foreground Dice (and with ``distance``, HD95) of the argmax prediction over the whole volume.

    The sliding window uses the training patch size: windows much larger than the training
    crops (zero-padded) shift the instance-norm statistics and cost most of the Dice.
    HD95 is MONAI's ``HausdorffDistanceMetric(percentile=95)``, in voxels (the cached volumes carry
    no spacing). Where it is undefined (an empty prediction or an empty label) the case counts the
    volume's diagonal, the worst distance there is: a model that finds nothing must not look
    better than one that finds it roughly, and only finite numbers may leave a site.
    """
    model.eval()
    dice_metric = DiceMetric(include_background=False, reduction="mean", ignore_empty=False)
    distance_metric = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="mean")
    scores = []
    for n in range(len(dataset)):
        item = dataset[n]
        image = item["image"][None].to(compute.device)
        label = item["label"][None].to(compute.device)
        with compute.autocast():
            logits = sliding_window_inference(image, (roi_size,) * 3, sw_batch_size=1, predictor=model, overlap=0.25)
        assert isinstance(logits, torch.Tensor)  # the model returns one tensor, not a tuple or dict of them
        classes = logits.shape[1]
        prediction = torch.nn.functional.one_hot(logits.argmax(1), classes).movedim(-1, 1)
        truth = torch.nn.functional.one_hot(label[:, 0].long(), classes).movedim(-1, 1)
        dice = dice_metric(prediction, truth)
        assert isinstance(dice, torch.Tensor)  # a batch tensor in gives a tensor out, not a list per item
        dice_metric.reset()
        scores.append(CaseScore(float(dice.mean()), _hd95(distance_metric, prediction, truth) if distance else None))
    return scores
