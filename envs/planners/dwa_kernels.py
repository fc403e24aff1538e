"""Compiled inner loops of the DWA: rollout collision checks and path distances, one pass per candidate.

These are the simulator's hot loops (every robot, candidate and checked pose, 20 times per simulated second). As
numpy they need a dozen [T, M] temporaries and gathers per tick; compiled with numba (``cache=True``: once per
install) they read each grid cell once. Semantics are those documented in :mod:`envs.planners.dwa`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from envs.maps import KNOWN_CAP, KNOWN_RES, KNOWN_SHAPE, X0, Y0
from envs.planners.costmap import FOOTPRINT_HALF, INSCRIBED_RADIUS, cell_cost
from envs.worlds import CYLINDER_RADIUS

_F = np.float32
_SCALE, _RES, _X0, _Y0 = _F(1 / KNOWN_RES), _F(KNOWN_RES), _F(X0), _F(Y0)
_HALF_L, _HALF_W = _F(FOOTPRINT_HALF[0]), _F(FOOTPRINT_HALF[1])
_INSCRIBED, _CAP = _F(INSCRIBED_RADIUS), _F(KNOWN_CAP)
_CIRCUMSCRIBED = _F(np.hypot(*FOOTPRINT_HALF))
_PROBE_CELLS = _F((FOOTPRINT_HALF[0] - FOOTPRINT_HALF[1] / 2) / KNOWN_RES)
"""Offset (known cells) of the front and back probes whose nearest known cylinders are tested with the centre's."""
_REACH2 = _F((CYLINDER_RADIUS + KNOWN_RES / 2) ** 2)
"""Squared distance (m^2) from the padded rectangle below which a cylinder touches it: the cylinder radius plus
the half-cell margin of TrajectoryPlanner's rasterised outline."""
_KH, _KW = KNOWN_SHAPE


@njit(cache=True, nogil=True)
def _cell(g: float, size: int) -> int:
    """Grid index of coordinate ``g`` (grid units; truncation as numpy's ``astype``), clipped to ``[0, size)``."""
    return min(max(int(g), 0), size - 1)


@njit(cache=True, nogil=True)
def _touches(known_id, cylinders, s, iy, ix, x, y, c, sn) -> bool:
    """Whether the nearest known cylinder of cell ``(iy, ix)`` of slot ``s`` touches the padded rectangle at
    ``(x, y)`` with heading cosine / sine ``c, sn``."""
    k = known_id[s, iy, ix]
    if k < 0:
        return False
    dx, dy = cylinders[s, k, 0] - x, cylinders[s, k, 1] - y
    # Cylinder centre in the footprint frame; it misses the rectangle iff farther than the reach from it.
    qx = max(abs(c * dx + sn * dy) - _HALF_L, _F(0.0))
    qy = max(abs(c * dy - sn * dx) - _HALF_W, _F(0.0))
    return qx * qx + qy * qy < _REACH2


@njit(cache=True, nogil=True)
def _may_come_near(clearance, v, sim_time, inflation) -> bool:
    """Whether a rollout at speed ``v`` (m/s) from ``clearance`` (m) of the nearest known obstacle can matter: it
    stays within ``|v| sim_time`` of its start, and clearance counts only below the circumscribed radius (contact)
    or ``inflation + INSCRIBED_RADIUS`` (outline cost). Those that cannot are valid with clearance ``KNOWN_CAP``."""
    return clearance < abs(v) * sim_time + max(_CIRCUMSCRIBED, inflation + _INSCRIBED)


@njit(cache=True, nogil=True)
def _rollout(known_dist, known_id, cylinders, s, px, py, v, r, ax, ay, th, times, inflation):
    """Whether the rollout of speed ``v`` along arc column ``r`` from ``(px, py)`` in slot ``s`` is valid, and its
    least centre clearance (m; partial when invalid). Arguments as :func:`check_rollouts`.

    Inscribed cells reach ``min(inflation, INSCRIBED_RADIUS)`` from an obstacle: costmap_2d's inflation layer only
    writes cells within its ``inflation_radius``, so a radius below the inscribed one shrinks the centre's guard.
    """
    least = _CAP
    inscribed = min(inflation, _INSCRIBED)
    gx0, gy0 = (px - _X0) * _SCALE, (py - _Y0) * _SCALE
    for t in range(times.shape[0]):
        gx = gx0 + v * (ax[t, r] * _SCALE)
        gy = gy0 + v * (ay[t, r] * _SCALE)
        iy, ix = _cell(gy, _KH), _cell(gx, _KW)
        centre = known_dist[s, iy, ix]
        least = min(least, centre)
        if centre >= _CIRCUMSCRIBED:
            continue
        # The centre in an inscribed cell, beyond the start footprint: TrajectoryPlanner's "no clear path".
        if centre < inscribed and abs(v) * times[t] > _HALF_L:
            return False, least
        x, y = gx * _RES + _X0, gy * _RES + _Y0
        c, sn = np.cos(th[t, r]), np.sin(th[t, r])
        sx, sy = round(c * _PROBE_CELLS), round(sn * _PROBE_CELLS)  # half to even, as np.rint
        if (
            _touches(known_id, cylinders, s, iy, ix, x, y, c, sn)
            or _touches(known_id, cylinders, s, _cell(iy + sy, _KH), _cell(ix + sx, _KW), x, y, c, sn)
            or _touches(known_id, cylinders, s, _cell(iy - sy, _KH), _cell(ix - sx, _KW), x, y, c, sn)
        ):
            return False, least
    return True, least


@njit(cache=True, nogil=True)
def check_rollouts(
    known_dist, known_id, cylinders, slot, px, py, vx, row, ax, ay, th, times, clearance, inflation, sim_time
):
    """Validity ``[M]`` and least centre clearance ``[M]`` (m) of constant-velocity rollouts.

    :param known_dist: Known-obstacle distance grids ``[E, KH, KW]`` float32 (m); ``known_id`` their cylinders
        ``[E, KH, KW]`` int16 (-1: none) and ``cylinders`` the centres ``[E, K, 2]`` float32 (m).
    :param slot: Grid slot of each candidate ``[M]``; ``px, py`` its start (m), ``vx`` its speed (m/s), ``row`` its
        column of the per-unit-speed arcs ``ax, ay`` (m per m/s) and headings ``th`` (rad), all ``[T, R]``, at
        ``times [T]`` (s).
    :param clearance: Distance (m) from each candidate's start to the nearest known obstacle ``[M]``, and
        ``inflation`` its robot's inflation radius ``[M]`` (m): rollouts that cannot come near an obstacle within
        ``sim_time`` (s) are skipped (valid, clearance ``KNOWN_CAP``).
    :return: ``valid [M]`` (bool) and ``least [M]`` (float32 m, at most ``KNOWN_CAP``; partial for invalid ones).
    """
    valid = np.ones(slot.shape[0], dtype=np.bool_)
    least = np.full(slot.shape[0], _CAP, dtype=np.float32)
    for m in range(slot.shape[0]):
        if _may_come_near(clearance[m], vx[m], sim_time, inflation[m]):
            valid[m], least[m] = _rollout(
                known_dist, known_id, cylinders, slot[m], px[m], py[m], vx[m], row[m], ax, ay, th, times, inflation[m]
            )
    return valid, least


@njit(cache=True, nogil=True)
def score_rollouts(
    known_dist, known_id, cylinders, env, pose, params, clearance, path, goal, e, vx, row, ax, ay, th, times, weights
):
    """TrajectoryPlanner cost of each candidate ``[M]`` float32, ``inf`` for rejected ones.

    Per robot (``[N, ...]``): world slot ``env``, ``pose``, DWA ``params`` (physical), ``clearance`` from the nearest
    known obstacle (m), local ``path [N, KP, 2]`` and local ``goal [N, 2]`` (m). Per candidate: robot ``e``, speed
    ``vx``, arc column ``row`` (arcs as :func:`check_rollouts`). ``weights``: (``sim_time`` s, occupancy weight).

    Cost: ``path_distance_bias * path_dist + goal_distance_bias * goal_dist + occ_weight * max_cost``, distances of
    the rollout's end point; ``max_cost`` is the highest cell cost under the padded footprint's outline, whose sides
    pass ~``INSCRIBED_RADIUS`` nearer the obstacle than the centre (the centre cell's own cost is never higher).
    """
    sim_time, occ_weight = weights[0], weights[1]
    last = times.shape[0] - 1
    cost = np.empty(e.shape[0], dtype=np.float32)
    for m in range(e.shape[0]):
        n, v, r = e[m], vx[m], row[m]
        px, py, inflation = pose[n, 0], pose[n, 1], params[n, 6]
        valid, least = True, _CAP
        if _may_come_near(clearance[n], v, sim_time, inflation):
            valid, least = _rollout(known_dist, known_id, cylinders, env[n], px, py, v, r, ax, ay, th, times, inflation)
        if not valid:
            cost[m] = np.inf
            continue
        end_x, end_y = px + v * ax[last, r], py + v * ay[last, r]
        nearest = np.float32(np.inf)
        for k in range(path.shape[1]):
            dx, dy = path[n, k, 0] - end_x, path[n, k, 1] - end_y
            nearest = min(nearest, dx * dx + dy * dy)
        goal_dist = np.hypot(goal[n, 0] - end_x, goal[n, 1] - end_y)
        occ = cell_cost(least - _INSCRIBED, inflation)
        cost[m] = params[n, 4] * np.sqrt(nearest) + params[n, 5] * goal_dist + occ_weight * occ
    return cost
