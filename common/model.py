"""The network every site trains: a MONAI 3D UNet built from :class:`common.settings.ModelSettings`.

Input ``(batch, 1, D, H, W)`` float image, normalised per volume (zero mean, unit variance);
output ``(batch, out_channels, D, H, W)`` logits. Spatial edges must be divisible by the product of
the strides (8 for the default three stride-2 levels).
"""

from __future__ import annotations

import torch
from monai.networks.nets import UNet

from common.settings import ModelSettings


def build_model(settings: ModelSettings) -> torch.nn.Module:
    return UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=settings.out_channels,
        channels=settings.channels,
        strides=settings.strides,
        num_res_units=settings.num_res_units,
    )


def spatial_multiple(settings: ModelSettings) -> int:
    """Every spatial edge of an input must be a multiple of this."""
    multiple = 1
    for stride in settings.strides:
        multiple *= stride
    return multiple
