"""Grids derived from a world: exact obstacle distance field and the stamps that build the planner's known map.

Two resolutions share one region (metres, BARN frame):
- the *truth* grid (``TRUE_RES`` = 0.025 m): distance to the nearest cylinder surface (capped) and the id of the
  nearest cylinder, used by the laser (sphere tracing + exact ray/circle refinement) and by collision checks;
- the *known* grid (``KNOWN_RES`` = 0.05 m, the move_base costmap resolution): distance to the nearest cylinder the
  robot has seen, built by stamping per-cylinder distance patches as the laser discovers them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from envs.worlds import CYLINDER_RADIUS, World

X0, Y0 = -6.0, -1.5
"""Lower-left corner of the simulated region (m)."""
WIDTH, HEIGHT = 7.5, 16.5
"""Size of the simulated region (m); beyond it there are no obstacles."""
TRUE_RES = 0.025
KNOWN_RES = 0.05
DIST_CAP = 1.0
"""Truth distances are capped here (m): sphere-tracing steps are at most this long."""
KNOWN_CAP = 0.75
"""Known-map distances are capped here (m): enough for the largest inflation radius (0.6) plus a margin."""

TRUE_SHAPE = (round(HEIGHT / TRUE_RES), round(WIDTH / TRUE_RES))
KNOWN_SHAPE = (round(HEIGHT / KNOWN_RES), round(WIDTH / KNOWN_RES))


@dataclass(frozen=True)
class WorldMaps:
    """Precomputed grids of one world.

    :param cylinders: Cylinder centres ``[K, 2]`` float32 (m).
    :param dist: Distance from each truth cell centre to the nearest cylinder surface ``[H, W]`` float32 (m),
        capped at ``DIST_CAP`` (negative inside a cylinder).
    :param owner: Index of the nearest cylinder for each truth cell ``[H, W]`` int32.
    :param stamp_index: Flat known-grid indices of each cylinder's patch ``[K, S]`` int32.
    :param stamp_dist: Distance of those cells to that cylinder's surface ``[K, S]`` float32, capped at KNOWN_CAP.
    """

    cylinders: np.ndarray
    dist: np.ndarray
    owner: np.ndarray
    stamp_index: np.ndarray
    stamp_dist: np.ndarray


def cell_centres(shape: tuple[int, int], res: float) -> tuple[np.ndarray, np.ndarray]:
    """World coordinates of the cell centres of a region grid: ``xs [W]``, ``ys [H]``."""
    return X0 + (np.arange(shape[1]) + 0.5) * res, Y0 + (np.arange(shape[0]) + 0.5) * res


def _truth(cylinders: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = cell_centres(TRUE_SHAPE, TRUE_RES)
    marks = np.zeros(TRUE_SHAPE, dtype=np.int32) - 1
    ix = np.clip(((cylinders[:, 0] - X0) / TRUE_RES).astype(int), 0, TRUE_SHAPE[1] - 1)
    iy = np.clip(((cylinders[:, 1] - Y0) / TRUE_RES).astype(int), 0, TRUE_SHAPE[0] - 1)
    marks[iy, ix] = np.arange(len(cylinders))
    # Nearest marked cell for every cell, then the exact distance to that cylinder.
    _, (ny, nx) = ndimage.distance_transform_edt(marks < 0, return_indices=True)
    owner = marks[ny, nx]
    dx = xs[None, :] - cylinders[owner, 0]
    dy = ys[:, None] - cylinders[owner, 1]
    dist = np.minimum(np.hypot(dx, dy) - CYLINDER_RADIUS, DIST_CAP).astype(np.float32)
    return dist, owner.astype(np.int32)


def _stamps(cylinders: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    half = int(np.ceil((KNOWN_CAP + CYLINDER_RADIUS) / KNOWN_RES))
    offsets = np.arange(-half, half + 1)
    cx = np.floor((cylinders[:, 0] - X0) / KNOWN_RES).astype(int)
    cy = np.floor((cylinders[:, 1] - Y0) / KNOWN_RES).astype(int)
    ix = cx[:, None, None] + offsets[None, None, :]
    iy = cy[:, None, None] + offsets[None, :, None]
    px, py = X0 + (ix + 0.5) * KNOWN_RES, Y0 + (iy + 0.5) * KNOWN_RES
    d = np.hypot(px - cylinders[:, 0, None, None], py - cylinders[:, 1, None, None]) - CYLINDER_RADIUS
    outside = (ix < 0) | (ix >= KNOWN_SHAPE[1]) | (iy < 0) | (iy >= KNOWN_SHAPE[0])
    d = np.where(outside, KNOWN_CAP, np.minimum(d, KNOWN_CAP))
    flat = np.clip(iy, 0, KNOWN_SHAPE[0] - 1) * KNOWN_SHAPE[1] + np.clip(ix, 0, KNOWN_SHAPE[1] - 1)
    k = len(cylinders)
    return flat.reshape(k, -1).astype(np.int32), d.reshape(k, -1).astype(np.float32)


@lru_cache(maxsize=64)
def world_maps(world: World) -> WorldMaps:
    """The grids of ``world`` (cached: building takes ~30 ms)."""
    cylinders = np.asarray(world.cylinders, dtype=np.float32)
    dist, owner = _truth(cylinders)
    stamp_index, stamp_dist = _stamps(cylinders)
    return WorldMaps(cylinders, dist, owner, stamp_index, stamp_dist)
