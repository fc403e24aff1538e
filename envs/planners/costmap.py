"""move_base-style costs from the known-obstacle distance map (costmap_2d inflation layer semantics)."""

from __future__ import annotations

import numpy as np
from numba import njit, vectorize

FOOTPRINT_HALF = (0.31, 0.265)
"""Half length and half width (m) of move_base's footprint (0.42 x 0.33 m) with footprint_padding 0.1."""
INSCRIBED_RADIUS = FOOTPRINT_HALF[1]
"""Inscribed radius of the padded footprint (m): closer to an obstacle is ``INSCRIBED`` cost."""
COST_SCALING = 10.0
"""costmap_2d inflation ``cost_scaling_factor`` (default)."""
LETHAL, INSCRIBED, MAX_NON_OBSTACLE = 254.0, 253.0, 252.0


@njit(cache=True, nogil=True)
def cell_cost(distance: float, inflation_radius: float) -> float:
    """Cell cost (0..253) at ``distance`` (m) from the nearest known obstacle, costmap_2d inflation layer:
    ``INSCRIBED`` within the inscribed radius, ``252 exp(-10 (d - r_in))`` out to ``inflation_radius`` (m), 0
    beyond."""
    if distance > inflation_radius:
        return 0.0
    if distance <= INSCRIBED_RADIUS:
        return INSCRIBED
    return MAX_NON_OBSTACLE * np.exp(-COST_SCALING * (distance - INSCRIBED_RADIUS))


@vectorize(["float32(float32, float32)"], cache=True)
def inflation_cost(distance: np.ndarray, inflation_radius: np.ndarray) -> np.ndarray:
    """:func:`cell_cost` of arrays (float32; shapes broadcast)."""
    return cell_cost(distance, inflation_radius)
