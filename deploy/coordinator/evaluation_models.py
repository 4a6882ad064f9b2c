"""The models ``insite coord evaluate`` scores: read on the coordinator, checked before any site is asked.

A MODEL is one of:

- an insite checkpoint (``run/checkpoints/round-NNNN.pt``): its run's settings name the network;
- a MONAI bundle (the ``bundle/`` folder ``insite export`` writes, the export folder around it, or
  a bundle from elsewhere): ``configs/inference.json`` + ``models/model.pt``.

A bundle's ``inference.json`` is read as JSON, never run by MONAI's config parser: its
``network_def`` must be exactly a network the sites build (:func:`common.model.build_model`),
that is ``monai.networks.nets.UNet`` with ``spatial_dims`` 3, ``in_channels`` 1, and free
``out_channels``, ``channels``, ``strides``, ``num_res_units``; any other argument only at
MONAI's default. Anything else (another class, a ``$`` expression, batch norm) is refused with
the model's name and the reason, and so are weights whose tensor names or shapes do not fit
that network. The sliding-window edge is the inferer's ``roi_size`` when it is a plain cube,
else the training patch of the run settings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from common.errors import FederationError, InsiteError
from common.model import build_model, spatial_multiple
from common.run_record import load_checkpoint
from common.settings import ModelSettings, RunSettings
from common.weights import check_compatible

INFERENCE = Path("configs/inference.json")
WEIGHTS = Path("models/model.pt")
UNET_NAMES = ("monai.networks.nets.UNet", "monai.networks.nets.unet.UNet", "UNet", "Unet")
#: Arguments the sites fix: the value a network_def must have, if it names them at all.
FIXED = {
    "spatial_dims": 3,
    "in_channels": 1,
    "kernel_size": 3,
    "up_kernel_size": 3,
    "act": "PRELU",
    "norm": "INSTANCE",
    "dropout": 0.0,
    "bias": True,
    "adn_ordering": "NDA",
}
FREE = ("out_channels", "channels", "strides", "num_res_units")


class ModelRefused(InsiteError):
    """A model the sites cannot score: unreadable, or not a network they build."""


@dataclass(frozen=True)
class CandidateModel:
    """A model read and checked on the coordinator, ready to be written into an evaluation request."""

    name: str
    kind: str
    source: Path
    model: ModelSettings
    window: int
    weights: dict[str, torch.Tensor]


def _same(value: Any, fixed: Any) -> bool:
    if isinstance(fixed, str) and isinstance(value, str):
        return value.upper() == fixed
    if isinstance(value, list | tuple) and len(value) == 1:  # MONAI accepts ("prelu",) for "prelu"
        return _same(value[0], fixed)
    return bool(value == fixed)


def model_settings_of(network: Any, name: str) -> ModelSettings:
    """The :class:`ModelSettings` a bundle's ``network_def`` amounts to, or :class:`ModelRefused` saying why."""
    if not isinstance(network, dict):
        raise ModelRefused(f"{name}: inference.json has no network_def object")
    target = network.get("_target_")
    if target not in UNET_NAMES:
        raise ModelRefused(
            f"{name}: network_def is {target!r}; sites build only monai.networks.nets.UNet "
            "(3D, 1 input channel), and never run a bundle's code"
        )
    for key, value in network.items():
        if key == "_target_" or key in FREE:
            continue
        if key not in FIXED:
            raise ModelRefused(f"{name}: network_def argument {key!r} is not one the sites build UNet with")
        if not _same(value, FIXED[key]):
            raise ModelRefused(f"{name}: network_def has {key}={value!r}; the sites build UNet with {FIXED[key]!r}")
    try:
        return ModelSettings.model_validate({key: network[key] for key in FREE if key in network})
    except ValidationError as error:
        reasons = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise ModelRefused(f"{name}: network_def does not describe a UNet the sites build ({reasons})") from None


def _check_weights(name: str, model: ModelSettings, weights: Any) -> dict[str, torch.Tensor]:
    if isinstance(weights, dict) and isinstance(weights.get("model"), dict):
        weights = weights["model"]  # MONAI's CheckpointSaver nests the network's state dict
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise ModelRefused(f"{name}: the weights file holds no state dict of tensors")
    with torch.device("meta"):
        expected = build_model(model).state_dict()
    try:
        check_compatible(expected, weights, name)
    except FederationError as error:  # the same check a round applies to an update, refused here
        raise ModelRefused(str(error)) from None
    return weights


def _from_checkpoint(path: Path, name: str) -> CandidateModel:
    try:
        checkpoint = load_checkpoint(path)
    except InsiteError as error:
        raise ModelRefused(f"{name}: {error}") from None
    if not checkpoint.settings_json:
        raise ModelRefused(f"{name}: {path} carries no run settings; the sites cannot tell its network")
    settings = RunSettings.model_validate_json(checkpoint.settings_json)
    weights = _check_weights(name, settings.model, checkpoint.weights)
    return CandidateModel(name, "insite checkpoint", path, settings.model, settings.training.patch_size, weights)


def _bundle_root(path: Path) -> Path:
    """``path`` itself, or the ``bundle/`` inside an export folder."""
    return path / "bundle" if not (path / INFERENCE).exists() and (path / "bundle" / INFERENCE).exists() else path


def _window(config: dict[str, Any], model: ModelSettings, fallback: int) -> int:
    inferer = config.get("inferer")
    roi = inferer.get("roi_size") if isinstance(inferer, dict) else None
    if isinstance(roi, list) and len(roi) == 3 and len(set(roi)) == 1 and isinstance(roi[0], int):
        edge = int(roi[0])
    else:
        edge = fallback
    multiple = spatial_multiple(model)
    return max(16, multiple, edge // multiple * multiple)


def _from_bundle(path: Path, name: str, fallback_window: int) -> CandidateModel:
    root = _bundle_root(path)
    inference = root / INFERENCE
    try:
        config = json.loads(inference.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelRefused(f"{name}: no {INFERENCE} in {root}; not a MONAI bundle") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelRefused(f"{name}: {inference} is not readable JSON ({error})") from None
    if not isinstance(config, dict):
        raise ModelRefused(f"{name}: {inference} is not a JSON object")
    model = model_settings_of(config.get("network_def"), name)
    try:
        raw = torch.load(root / WEIGHTS, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelRefused(f"{name}: no {WEIGHTS} in {root}") from None
    except Exception as error:  # torch raises many types for a damaged file
        raise ModelRefused(f"{name}: {root / WEIGHTS} is not a readable weights file ({error})") from None
    weights = _check_weights(name, model, raw)
    kind = "insite export" if (root.parent / "manifest.toml").is_file() else "MONAI bundle"
    return CandidateModel(name, kind, root, model, _window(config, model, fallback_window), weights)


def model_name(path: Path, taken: set[str]) -> str:
    """A short, unique name for the table: the bundle or run folder and file, e.g. ``run/round-0003``."""
    parts = [p for p in path.resolve().parts if p not in ("bundle", "checkpoints", "models")]
    base = "/".join(parts[-2:]) if path.suffix == ".pt" else parts[-1]
    base = base.removesuffix(".pt")
    name, number = base, 2
    while name in taken:
        name, number = f"{base} ({number})", number + 1
    return name


def read_model(path: Path, name: str, fallback_window: int) -> CandidateModel:
    """Read and check one MODEL argument; :class:`ModelRefused` names the model and the reason."""
    if path.is_dir():
        return _from_bundle(path, name, fallback_window)
    if path.is_file():
        return _from_checkpoint(path, name)
    raise ModelRefused(f"{name}: {path} does not exist")
