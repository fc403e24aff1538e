"""Compiled helpers shared by the trajectory optimisers (MPPI, DDP, TEB): obstacle clearance of the robot's
two-circle body from the costmap's nearest known cylinders, costmap cell cost at a point, unicycle steps and points
along the local plan. All distances in metres, angles in radians; grids as :class:`envs.planners.base.PlannerInput`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from envs import robot
from envs.maps import KNOWN_CAP, KNOWN_RES, KNOWN_SHAPE, X0, Y0
from envs.planners.costmap import FOOTPRINT_HALF, cell_cost
from envs.worlds import CYLINDER_RADIUS


def _two_circles(half_l: float, half_w: float) -> tuple[float, float]:
    """Centre offset and radius (m) of two circles on the axis covering a ``2 half_l x 2 half_w`` rectangle (each
    covers one half: centred on it, through its corners)."""
    return half_l / 2, float(np.hypot(half_l / 2, half_w))


HULL_CIRCLES = _two_circles(robot.LENGTH / 2, robot.WIDTH / 2)
"""The Jackal's hull with its wheels (0.458 x 0.416 m) as two circles (teb's "two circles" footprint model)."""
PADDED_CIRCLES = _two_circles(*FOOTPRINT_HALF)
"""move_base's padded footprint (0.62 x 0.53 m) as two circles."""
_KH, _KW = KNOWN_SHAPE


@njit(cache=True, nogil=True)
def known_cell(x: float, y: float) -> tuple[int, int]:
    """Known-grid ``(row, col)`` of point ``(x, y)`` (m), clipped to the grid."""
    iy = min(max(int((y - Y0) / KNOWN_RES), 0), _KH - 1)
    ix = min(max(int((x - X0) / KNOWN_RES), 0), _KW - 1)
    return iy, ix


@njit(cache=True, nogil=True)
def centre_cost(known_dist, s: int, x: float, y: float, inflation: float) -> float:
    """Costmap cell cost at ``(x, y)`` of slot ``s`` scaled to [0, 1] (253/252: inscribed; 0 beyond ``inflation``)."""
    iy, ix = known_cell(x, y)
    return cell_cost(known_dist[s, iy, ix], inflation) / 252.0


@njit(cache=True, nogil=True)
def body_clearance(known_dist, known_id, cylinders, s, x, y, th, circles):
    """Clearance (m) of a two-circle body at pose ``(x, y, th)`` of slot ``s`` from the nearest known cylinder's
    surface (negative: overlap; ``KNOWN_CAP`` when none is near), and its gradient ``(gx, gy)`` with respect to
    ``(x, y)``. ``circles``: (offset, radius) of :func:`_two_circles`; the cylinder tested for each circle is the
    nearest one to its centre (the known map's ``known_id``), so the distance is exact, not rasterised."""
    offset, radius = circles
    best, gx, gy = KNOWN_CAP, 0.0, 0.0
    c, sn = np.cos(th), np.sin(th)
    for side in (1.0, -1.0):
        cx, cy = x + side * offset * c, y + side * offset * sn
        iy, ix = known_cell(cx, cy)
        if known_dist[s, iy, ix] - radius - KNOWN_RES >= best:  # the cell's distance is within a cell of exact
            continue
        k = known_id[s, iy, ix]
        if k < 0:
            continue
        dx, dy = cx - cylinders[s, k, 0], cy - cylinders[s, k, 1]
        norm = max(np.sqrt(dx * dx + dy * dy), 1e-9)
        d = norm - CYLINDER_RADIUS - radius
        if d < best:
            best, gx, gy = d, dx / norm, dy / norm
    return best, gx, gy


@njit(cache=True, nogil=True)
def unicycle(x: float, y: float, th: float, v: float, w: float, dt: float) -> tuple[float, float, float]:
    """Pose after ``dt`` s at constant ``(v, w)`` (midpoint heading)."""
    mid = th + 0.5 * w * dt
    return x + v * dt * np.cos(mid), y + v * dt * np.sin(mid), th + w * dt


@njit(cache=True, nogil=True)
def path_arclength(path: np.ndarray) -> np.ndarray:
    """Cumulative length ``[KP]`` (m) along one robot's local plan ``[KP, 2]`` from its first point."""
    out = np.zeros(path.shape[0])
    for k in range(1, path.shape[0]):
        out[k] = out[k - 1] + np.hypot(path[k, 0] - path[k - 1, 0], path[k, 1] - path[k - 1, 1])
    return out


@njit(cache=True, nogil=True)
def point_at(path: np.ndarray, arc: np.ndarray, s: float) -> tuple[float, float, float]:
    """Point ``(x, y)`` and tangent heading at arc length ``s`` (m, clipped to the plan) of a local plan."""
    last = path.shape[0] - 1
    k = 0
    while k < last and arc[k + 1] <= s:
        k += 1
    if k < last and arc[k + 1] - arc[k] > 1e-9:
        f = (s - arc[k]) / (arc[k + 1] - arc[k])
        dx, dy = path[k + 1, 0] - path[k, 0], path[k + 1, 1] - path[k, 1]
        return path[k, 0] + f * dx, path[k, 1] + f * dy, np.arctan2(dy, dx)
    j = k  # at the plan's end (padded with its last point): the tangent of its last real segment
    while j > 0 and arc[j] - arc[j - 1] <= 1e-9:
        j -= 1
    heading = np.arctan2(path[j, 1] - path[j - 1, 1], path[j, 0] - path[j - 1, 0]) if j > 0 else 0.0
    return path[k, 0], path[k, 1], heading


@njit(cache=True, nogil=True)
def project(path: np.ndarray, arc: np.ndarray, x: float, y: float) -> float:
    """Arc length (m) of the point of a local plan ``[KP, 2]`` nearest to ``(x, y)``."""
    best, where = np.inf, 0.0
    for k in range(path.shape[0] - 1):
        seg = arc[k + 1] - arc[k]
        if seg <= 1e-9:
            break
        ux, uy = (path[k + 1, 0] - path[k, 0]) / seg, (path[k + 1, 1] - path[k, 1]) / seg
        f = min(max((x - path[k, 0]) * ux + (y - path[k, 1]) * uy, 0.0), seg)
        d = np.hypot(path[k, 0] + f * ux - x, path[k, 1] + f * uy - y)
        if d < best:
            best, where = d, arc[k] + f
    return where


@njit(cache=True, nogil=True)
def wrap(a: float) -> float:
    """Angle ``a`` wrapped to [-pi, pi)."""
    return (a + np.pi) % (2 * np.pi) - np.pi
