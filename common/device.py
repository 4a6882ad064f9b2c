"""Where a site trains and with which precision.

CUDA when present (autocast bf16 on GPUs that support it, else fp16 with a gradient scaler);
otherwise the CPU, with bf16 autocast only where the CPU has native bf16 (AVX-512 BF16 or AMX):
on other CPUs bf16 is emulated and slower than fp32, so fp32 is used.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Literal

import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Compute:
    device: torch.device
    autocast_dtype: torch.dtype | None
    grad_scaling: bool

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def describe(self) -> str:
        precision = "fp32" if self.autocast_dtype is None else str(self.autocast_dtype).split(".")[-1]
        return f"{self.device.type} {precision}"


def cpu_has_native_bf16() -> bool:
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def select_compute(preference: Literal["auto", "cuda", "cpu"] = "auto", mixed_precision: bool = True) -> Compute:
    """Pick the device; a site asking for CUDA without one falls back to the CPU with a warning."""
    if preference in ("auto", "cuda") and torch.cuda.is_available():
        if not mixed_precision:
            return Compute(torch.device("cuda"), None, False)
        if torch.cuda.is_bf16_supported():
            return Compute(torch.device("cuda"), torch.bfloat16, False)
        return Compute(torch.device("cuda"), torch.float16, True)
    if preference == "cuda":
        log.warning("CUDA was requested but no GPU is usable here; training on the CPU")
    dtype = torch.bfloat16 if mixed_precision and cpu_has_native_bf16() else None
    return Compute(torch.device("cpu"), dtype, False)
