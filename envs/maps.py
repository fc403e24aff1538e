"""Grids derived from a world: the nearest-cylinder grid for collision checks and the planner's known map.

Two resolutions share one region (metres, BARN frame):
- the *truth* grid (``TRUE_RES`` = 0.025 m): the id of the nearest cylinder of every cell, so a point's exact
  distance to the obstacles is one lookup and one hypot (collision checks);
- the *known* grid (``KNOWN_RES`` = 0.05 m, the move_base costmap resolution): distance to the nearest cylinder the
  robot has seen, built by stamping per-cylinder distance patches as the laser discovers them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numba import njit
from scipy import ndimage

from envs.worlds import CYLINDER_RADIUS, World

X0, Y0 = -6.025, -1.525
"""Lower-left corner of the simulated region (m): known-grid cell centres fall on the corners of the BARN grid, so
the global planner's grid (every third known cell) can put its cells between BARN cylinders (see
``envs.planners.global_planner``)."""
WIDTH, HEIGHT = 7.5, 16.5
"""Size of the simulated region (m); beyond it there are no obstacles."""
TRUE_RES = 0.025
KNOWN_RES = 0.05
KNOWN_CAP = 0.9
"""Known-map distances are capped here (m): the footprint outline's cost needs the largest inflation radius (0.6)
beyond the inscribed radius (0.265) from the centre."""

TRUE_SHAPE = (round(HEIGHT / TRUE_RES), round(WIDTH / TRUE_RES))
KNOWN_SHAPE = (round(HEIGHT / KNOWN_RES), round(WIDTH / KNOWN_RES))

_STAMP_HALF = int(np.ceil((KNOWN_CAP + CYLINDER_RADIUS) / KNOWN_RES))


@dataclass(frozen=True)
class WorldMaps:
    """Precomputed grids of one world.

    :param cylinders: Obstacle cylinder centres ``[K, 2]`` float32 (m).
    :param owner: Index of the nearest cylinder for each truth cell ``[H, W]`` int16.
    """

    cylinders: np.ndarray
    owner: np.ndarray


def _owner(cylinders: np.ndarray) -> np.ndarray:
    marks = np.zeros(TRUE_SHAPE, dtype=np.int32) - 1
    ix = np.clip(((cylinders[:, 0] - X0) / TRUE_RES).astype(int), 0, TRUE_SHAPE[1] - 1)
    iy = np.clip(((cylinders[:, 1] - Y0) / TRUE_RES).astype(int), 0, TRUE_SHAPE[0] - 1)
    marks[iy, ix] = np.arange(len(cylinders))
    # The nearest marked cell stands for the nearest cylinder (exact up to half a truth cell).
    _, (ny, nx) = ndimage.distance_transform_edt(marks < 0, return_indices=True)
    return marks[ny, nx].astype(np.int16)


def stamp_known(
    known_dist: np.ndarray, known_id: np.ndarray, slots: np.ndarray, centres: np.ndarray, ids: np.ndarray
) -> None:
    """Add newly seen cylinders to the known grids, in place.

    :param known_dist: Distance to the nearest known cylinder surface ``[E, KH, KW]`` (m, capped at KNOWN_CAP).
    :param known_id: Index of that cylinder ``[E, KH, KW]`` (-1: none within the cap).
    :param slots: Grid slot of each new cylinder ``[k]``.
    :param centres: Their centres ``[k, 2]`` (m).
    :param ids: Their indices in their world ``[k]``.
    """
    if len(centres) == 0:
        return
    gx, gy = (centres[:, 0] - X0) / KNOWN_RES + 1e-4, (centres[:, 1] - Y0) / KNOWN_RES + 1e-4
    cx, cy = np.floor(gx).astype(np.int64), np.floor(gy).astype(np.int64)
    # Where each centre lies in its cell, rounded: BARN's cylinders all sit on one 0.15 m grid, so the patches of
    # equal phases are equal.
    _stamp(known_dist, known_id, np.asarray(slots), cx, cy, np.round(gx - cx, 3), np.round(gy - cy, 3), ids)


@njit(cache=True, nogil=True)
def _stamp(known_dist, known_id, slots, cx, cy, phase_x, phase_y, ids) -> None:
    """:func:`stamp_known` for cylinders whose centres lie at ``phase`` within known cells ``(cy, cx)``."""
    for j in range(len(slots)):
        for oy in range(-_STAMP_HALF, _STAMP_HALF + 1):
            iy = cy[j] + oy
            if not 0 <= iy < KNOWN_SHAPE[0]:
                continue
            dy = (oy + 0.5 - phase_y[j]) * KNOWN_RES
            for ox in range(-_STAMP_HALF, _STAMP_HALF + 1):
                ix = cx[j] + ox
                if not 0 <= ix < KNOWN_SHAPE[1]:
                    continue
                dx = (ox + 0.5 - phase_x[j]) * KNOWN_RES
                d = np.float32(np.sqrt(dx * dx + dy * dy) - CYLINDER_RADIUS)
                if d < known_dist[slots[j], iy, ix]:
                    known_dist[slots[j], iy, ix] = d
                    known_id[slots[j], iy, ix] = ids[j]


@lru_cache(maxsize=64)
def world_maps(world: World) -> WorldMaps:
    """The grids of ``world`` (cached: building takes ~15 ms)."""
    cylinders = np.asarray(world.cylinders, dtype=np.float32)
    return WorldMaps(cylinders, _owner(cylinders))
