"""Privacy accounting for the optional differential privacy of a run (user level = site level).

Each round, every site clips its model update to an L2 norm of ``clipping_norm`` and the
coordinator adds Gaussian noise of standard deviation ``noise_multiplier * clipping_norm /
sites`` to the mean (Flower's ``DifferentialPrivacyClientSideFixedClipping``), so one site's
whole contribution to a round is a Gaussian mechanism with noise multiplier ``z``. Every site
takes part in every round (no subsampling), so ``T`` rounds compose to Renyi DP of order
``a`` with ``eps_a = T * a / (2 z^2)`` (Mironov 2017), converted to (epsilon, delta)-DP with
``epsilon = min_a eps_a + log(1/delta) / (a - 1)``. Closed form, no accountant library needed.
"""

from __future__ import annotations

import math

ORDERS = [1 + x / 10 for x in range(1, 100)] + list(range(12, 64)) + [128, 256, 512]


def gaussian_epsilon(noise_multiplier: float, rounds: int, delta: float) -> float:
    """Epsilon spent after ``rounds`` full-participation Gaussian rounds at ``delta``."""
    if rounds <= 0:
        return 0.0
    if noise_multiplier <= 0:
        return math.inf
    return min(rounds * a / (2 * noise_multiplier**2) + math.log(1 / delta) / (a - 1) for a in ORDERS)
