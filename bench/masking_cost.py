"""What SecAgg+'s masking and unmasking cost in CPU, apart from the messages that carry them.

Times Flower's own functions (the ones ``secaggplus_mod`` and ``SecAggPlusWorkflow`` call) on the
tensor shapes of a real model, on one core, for 3 sites with ``num_shares`` 3 (each site masks with
its two neighbours):

- at each site: quantise the update, add its private mask and one pairwise mask per neighbour,
  reduce modulo 2**32; then insite's narrowing to uint32 and the bytes it sends;
- at the coordinator: insite's widening back to int64, the sum of the three masked vectors, the
  removal of each site's private mask (regenerated from its reconstructed seed), and dequantising.

    python -m bench.masking_cost [--channels 32 64 128 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import torch
from flwr.common import bytes_to_ndarray, ndarray_to_bytes
from flwr.common.secure_aggregation.ndarrays_arithmetic import (
    factor_combine,
    parameters_addition,
    parameters_mod,
    parameters_subtraction,
)
from flwr.common.secure_aggregation.quantization import dequantize, quantize
from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen

from common.masked_update import narrowed, widened
from common.model import build_model
from common.settings import ModelSettings

MODULUS = 2**32
TARGET_RANGE = 2**22  # insite's quantization_range (configs/federation.toml)
CLIPPING = 8.0
SITES = 3
T = TypeVar("T")


def timed(work: Callable[[], T], repeats: int) -> tuple[float, T]:
    """Median seconds of ``repeats`` runs, and the last result."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--channels", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = ModelSettings(channels=tuple(args.channels), strides=(2,) * (len(args.channels) - 1))
    update = [t.numpy().astype(np.float32) for t in build_model(model).state_dict().values()]
    # the vector a site masks: its quantised update behind one leading entry (its weight factor)
    shapes = [a.shape for a in factor_combine(1, quantize(update, CLIPPING, TARGET_RANGE))]
    parameters = sum(a.size for a in update)

    def mask() -> list[np.ndarray]:
        vector = factor_combine(1, quantize(update, CLIPPING, TARGET_RANGE))
        vector = parameters_addition(vector, pseudo_rand_gen(b"private-seed" * 3, MODULUS, shapes))
        for neighbour in (b"neighbour-a!", b"neighbour-b!"):
            vector = parameters_addition(vector, pseudo_rand_gen(neighbour * 3, MODULUS, shapes))
        return parameters_mod(vector, MODULUS)

    mask_s, masked = timed(mask, args.repeats)
    raw = [ndarray_to_bytes(a) for a in masked]
    narrow_s, wire = timed(lambda: narrowed(raw), args.repeats)
    widen_s, back = timed(lambda: widened(wire), args.repeats)
    vectors = [[bytes_to_ndarray(b) for b in back]] * SITES

    def unmask() -> list[np.ndarray]:
        total = vectors[0]
        for other in vectors[1:]:
            total = parameters_addition(total, other)
        for site in range(SITES):
            total = parameters_subtraction(total, pseudo_rand_gen(bytes([site]) * 32, MODULUS, shapes))
        return dequantize(parameters_mod(total, MODULUS), CLIPPING, TARGET_RANGE)

    unmask_s, _ = timed(unmask, args.repeats)
    float_mb = parameters * 4 / 1e6
    print(f"model: {parameters / 1e6:.2f}M parameters ({float_mb:.1f} MB as float32); {SITES} sites, 2 neighbours each")
    print(f"  site: quantise + 3 masks + mod          {mask_s:6.2f} s")
    print(f"  site: narrow to uint32                   {narrow_s:6.2f} s")
    print(
        f"  bytes sent per site: int64 {sum(map(len, raw)) / 1e6:.1f} MB -> uint32 {sum(map(len, wire)) / 1e6:.1f} MB"
    )
    print(f"  coordinator: widen one site's vectors    {widen_s:6.2f} s")
    print(f"  coordinator: sum {SITES}, remove {SITES} masks, dequantise {unmask_s:6.2f} s")


if __name__ == "__main__":
    main()
