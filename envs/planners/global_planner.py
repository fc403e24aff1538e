"""NavFn-like global planner: Dijkstra on the inflated known-obstacle grid, from the goal (a navigation function).

Only obstacles the robot has seen exist for it (move_base's global costmap is built from the laser; unseen space
is free). One Dijkstra from the goal gives the cost-to-go of every cell, so the plan from any robot cell is a walk
along predecessors; it is recomputed only when the known map or the inflation radius changes in a way that
matters (see ``envs.sim``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from envs.maps import KNOWN_RES, KNOWN_SHAPE, X0, Y0
from envs.planners.costmap import INSCRIBED, inflation_cost
from envs.worlds import CELL, cell_to_xy

PLAN_STRIDE = 3
"""The plan grid takes every third known cell: 0.15 m cells, BARN's own cell size."""
PLAN_RES = KNOWN_RES * PLAN_STRIDE
_CORNER = cell_to_xy(np.zeros((1, 2)))[0] - CELL / 2
# Known-grid (row, col) of the first plan cell: plan cells are centred on the corners of the BARN grid, midway
# between cylinders, so a gap of n free BARN cells is passable exactly when its true centre is (n >= 4).
_FIRST = tuple(int(round((_CORNER[a] - o) / KNOWN_RES - 0.5)) % PLAN_STRIDE for a, o in ((1, Y0), (0, X0)))
PLAN_SHAPE = tuple(len(range(_FIRST[a], KNOWN_SHAPE[a], PLAN_STRIDE)) for a in (0, 1))
COST_NEUTRAL, COST_FACTOR = 50.0, 0.8
"""NavFn's step cost: ``COST_NEUTRAL + COST_FACTOR * costmap cost`` per cell."""


def cell_of(xy: np.ndarray) -> np.ndarray:
    """Plan-grid flat index of world points ``[..., 2]`` (clipped to the region)."""
    # Plan cell c covers known cells _FIRST + 3c - 1 .. _FIRST + 3c + 1.
    ix = np.floor(((xy[..., 0] - X0) / KNOWN_RES - _FIRST[1] + 1) / PLAN_STRIDE).astype(int)
    iy = np.floor(((xy[..., 1] - Y0) / KNOWN_RES - _FIRST[0] + 1) / PLAN_STRIDE).astype(int)
    return np.clip(iy, 0, PLAN_SHAPE[0] - 1) * PLAN_SHAPE[1] + np.clip(ix, 0, PLAN_SHAPE[1] - 1)


def cell_centre(cell: np.ndarray) -> np.ndarray:
    """World coordinates ``[..., 2]`` of plan-grid cells."""
    iy, ix = np.divmod(np.asarray(cell), PLAN_SHAPE[1])
    x = X0 + (_FIRST[1] + PLAN_STRIDE * ix + 0.5) * KNOWN_RES
    y = Y0 + (_FIRST[0] + PLAN_STRIDE * iy + 0.5) * KNOWN_RES
    return np.stack([x, y], axis=-1).astype(np.float32)


def _cell_factors(known_dist: np.ndarray, inflation_radius: float) -> np.ndarray:
    """NavFn's cost of entering each plan cell relative to free space ``[PH * PW]`` (inf: inscribed or lethal)."""
    cost = inflation_cost(known_dist[_FIRST[0] :: PLAN_STRIDE, _FIRST[1] :: PLAN_STRIDE].ravel(), inflation_radius)
    return np.where(cost >= INSCRIBED, np.inf, 1.0 + (COST_FACTOR / COST_NEUTRAL) * cost)


def path_costs(known_dist: np.ndarray, inflation_radius: float, path: np.ndarray) -> np.ndarray:
    """NavFn cost (m of free travel) of each step of ``path [n, 2]`` on the current map ``[n - 1]``; a step into
    an inscribed or lethal cell costs inf."""
    factor = _cell_factors(known_dist, inflation_radius)[cell_of(path[1:])]
    length = np.hypot(*np.diff(path, axis=0).T)
    # A repeated point costs nothing, even in an obstacle (and 0 * inf must not make a NaN).
    return np.multiply(length, factor, out=np.zeros_like(length), where=length > 0)


def navigation_function(
    known_dist: np.ndarray,
    inflation_radius: float,
    goal: np.ndarray,
    limit: float = np.inf,
    box: tuple[float, float, float, float] | None = None,
) -> np.ndarray:
    """Cost-to-go predecessors towards ``goal`` on one known map.

    :param known_dist: Known-obstacle distance grid ``[KH, KW]`` (m).
    :param inflation_radius: Inflation radius (m).
    :param goal: Goal ``[2]`` (m).
    :param limit: Cells whose cost-to-go exceeds this (m of free travel) are not explored.
    :param box: Only search inside (x_min, x_max, y_min, y_max) (m; must hold the goal).
    :return: Predecessor of every plan cell on its way to the goal ``[PH * PW]`` (-9999 where unreachable).
    """
    rows, cols = (0, PLAN_SHAPE[0]), (0, PLAN_SHAPE[1])
    if box is not None:
        lo, hi = cell_of(np.array([box[0], box[2]])), cell_of(np.array([box[1], box[3]]))
        (r0, c0), (r1, c1) = divmod(int(lo), PLAN_SHAPE[1]), divmod(int(hi), PLAN_SHAPE[1])
        rows, cols = (r0, r1 + 1), (c0, c1 + 1)
    factors = _cell_factors(known_dist, inflation_radius).reshape(PLAN_SHAPE).astype(np.float64)
    pred = np.full(PLAN_SHAPE, -9999, dtype=np.int64)
    goal_row, goal_col = divmod(int(cell_of(goal)), PLAN_SHAPE[1])
    _dijkstra(factors, rows[0], rows[1], cols[0], cols[1], goal_row, goal_col, float(limit), pred)
    return pred.ravel()


@njit(cache=True, nogil=True)
def _dijkstra(factors, r0, r1, c0, c1, goal_row, goal_col, limit, pred) -> None:
    """Dijkstra from the goal cell over the 8-connected plan cells of rows ``r0 .. r1 - 1`` and columns
    ``c0 .. c1 - 1`` of ``factors [PH, PW]``, writing each reached cell's successor towards the goal into ``pred``
    (flat whole-map numbers; cells costlier than ``limit`` m are left alone).

    The search runs from the goal over reversed moves: reaching cell v from u here is the robot's move v -> u,
    which pays for entering u (length x ``factors[u]``). Inscribed and lethal cells (inf) are never entered.
    """
    width = c1 - c0
    dist = np.full((r1 - r0) * width, np.inf)
    # Binary heap of (cost, local cell) with lazy deletion: stale entries are skipped when popped.
    keys = np.empty(8 * dist.size + 1)
    cells = np.empty(8 * dist.size + 1, dtype=np.int64)
    start = (goal_row - r0) * width + goal_col - c0
    dist[start], keys[0], cells[0], size = 0.0, 0.0, start, 1
    while size:
        d, u = keys[0], cells[0]
        size -= 1
        keys[0], cells[0] = keys[size], cells[size]
        i = 0  # sift down
        while True:
            child = 2 * i + 1
            if child >= size:
                break
            if child + 1 < size and keys[child + 1] < keys[child]:
                child += 1
            if keys[child] >= keys[i]:
                break
            keys[i], keys[child], cells[i], cells[child] = keys[child], keys[i], cells[child], cells[i]
            i = child
        if d > dist[u]:
            continue
        ur, uc = divmod(u, width)
        factor = factors[ur + r0, uc + c0]
        if not factor < np.inf:
            continue
        for dr in range(-1, 2):
            for dc in range(-1, 2):
                vr, vc = ur + dr, uc + dc
                if (dr == 0 and dc == 0) or not (0 <= vr < r1 - r0 and 0 <= vc < width):
                    continue
                nd = d + (PLAN_RES * np.sqrt(dr * dr + dc * dc)) * factor
                v = vr * width + vc
                if nd >= dist[v] or nd > limit:
                    continue
                dist[v] = nd
                pred[vr + r0, vc + c0] = (ur + r0) * PLAN_SHAPE[1] + uc + c0
                keys[size], cells[size] = nd, v  # sift up
                i = size
                size += 1
                while i > 0 and keys[(i - 1) // 2] > keys[i]:
                    p = (i - 1) // 2
                    keys[i], keys[p], cells[i], cells[p] = keys[p], keys[i], cells[p], cells[i]
                    i = p


def extract_path(pred: np.ndarray, start: np.ndarray, goal: np.ndarray, max_cells: int = 2000) -> np.ndarray | None:
    """World path ``[n, 2]`` from ``start`` to ``goal`` along ``pred``; None if the start cell cannot reach the goal."""
    cell, goal_cell = int(cell_of(start)), int(cell_of(goal))
    cells = [cell]
    while cell != goal_cell:
        cell = int(pred[cell])
        if cell < 0 or len(cells) > max_cells:
            return None
        cells.append(cell)
    pts = cell_centre(np.array(cells))
    return np.concatenate([start[None, :2], pts[1:-1], goal[None, :2]]).astype(np.float32)
