"""Masked SecAgg+ vectors travel as uint32 (common/masked_update.py): exact, for any modulus Flower allows."""

from __future__ import annotations

import numpy as np
from flwr.common import bytes_to_ndarray, ndarray_to_bytes
from flwr.common.secure_aggregation.ndarrays_arithmetic import parameters_addition, parameters_mod
from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen

from common.masked_update import narrowed, widened

MODULUS = 2**32  # SecAggPlusWorkflow's default and its largest


def masked(seed: bytes, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    """Vectors as secaggplus_mod leaves them: int64, reduced modulo the modulus."""
    return parameters_mod(pseudo_rand_gen(seed, MODULUS, shapes), MODULUS)


def test_narrowing_halves_the_bytes_and_widening_gives_back_every_value():
    vectors = masked(b"site-a" * 6, [(30, 40, 5), (7,), (0,), ()])
    vectors[1][0] = MODULUS - 1  # the largest value the modulus leaves
    wire = narrowed([ndarray_to_bytes(v) for v in vectors])
    assert all(bytes_to_ndarray(b).dtype == np.uint32 for b in wire)
    assert sum(map(len, wire)) < 0.6 * sum(len(ndarray_to_bytes(v)) for v in vectors)
    back = [bytes_to_ndarray(b) for b in widened(wire)]
    assert all(b.dtype == np.int64 and np.array_equal(b, v) for b, v in zip(back, vectors, strict=True))


def test_the_coordinators_sum_is_the_same_to_the_bit():
    shapes = [(64, 3), (5,)]
    sites = [masked(bytes([n]) * 32, shapes) for n in range(3)]
    direct = sites[0]
    for vectors in sites[1:]:
        direct = parameters_addition(direct, vectors)
    through_wire = [[bytes_to_ndarray(b) for b in widened(narrowed([ndarray_to_bytes(v) for v in s]))] for s in sites]
    summed = through_wire[0]
    for vectors in through_wire[1:]:
        summed = parameters_addition(summed, vectors)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(parameters_mod(summed, MODULUS), parameters_mod(direct, MODULUS), strict=True)
    )


def test_a_vector_beyond_32_bits_is_sent_as_it_is():
    too_wide = ndarray_to_bytes(np.array([2**33, 1], dtype=np.int64))
    assert narrowed([too_wide]) == [too_wide]
    assert bytes_to_ndarray(widened([too_wide])[0]).tolist() == [2**33, 1]
