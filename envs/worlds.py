"""BARN-style worlds: cellular-automaton obstacle fields, real BARN world files, reference paths, splits.

Frame and layout follow the BARN challenge (``the-barn-challenge`` ``run.py``): a 30 x 30 field of 0.15 m cells at
5 <= y <= 9.5 m and -4.5 <= x <= 0 m, one cylinder of radius 0.075 m per occupied cell, a corridor below it closed
by walls of cylinders, the robot starting at (-2.25, 3) facing +y and the goal at (-2.25, 13).
Grid cell (col, row) -> world ``x = col * 0.15 - 4.575``, ``y = row * 0.15 + 5.075``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
from numba import njit
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

CELL = 0.15
"""BARN grid cell size (m)."""
CYLINDER_RADIUS = 0.075
"""Radius of every BARN obstacle cylinder (m)."""
FIELD_SIZE = 30
"""The obstacle field is FIELD_SIZE x FIELD_SIZE cells."""
START_POSE = (-2.25, 3.0, np.pi / 2)
"""BARN start pose (x m, y m, heading rad)."""
GOAL_XY = (-2.25, 13.0)
"""BARN goal: start + (0, 10)."""
SUCCESS_RADIUS = 1.0
"""BARN success: within this distance of the goal (m)."""
N_WORLDS = 300
TEST_IDS: tuple[int, ...] = tuple(range(0, N_WORLDS, 6))
"""The BARN challenge's 50 test worlds: 0, 6, ..., 294."""
TRAIN_IDS: tuple[int, ...] = tuple(i for i in range(N_WORLDS) if i % 6 != 0)
"""The other 250 worlds (APPLR trained on 250 worlds)."""

FILL_LEVELS = (0.15, 0.20, 0.25, 0.30)
SMOOTH_ITERS = (2, 3, 4)
"""BARN's 12 cellular-automaton settings (fill x smoothing), 25 worlds each."""

# Wall rows/cols of the BARN layout in grid coordinates (seen in the published worlds): the bottom wall at row -33
# (y = 0.075) spans cols 1..30; side walls at cols 1 and 30 for rows -33..-1; the field is cols 1..30, rows 0..29.
_WALL_ROW = -33
_FIELD_COLS = (1, 30)


def cell_to_xy(cells: np.ndarray) -> np.ndarray:
    """Grid cells ``[n, 2]`` (col, row) -> world points ``[n, 2]`` (x, y) in metres."""
    cells = np.asarray(cells, dtype=np.float64)
    return np.stack([cells[:, 0] * CELL - 0.075 - 4.5, cells[:, 1] * CELL + 0.075 + 5.0], axis=1)


def path_length(points: np.ndarray) -> float:
    """Length (m) of a polyline ``[n, 2]``."""
    return float(np.linalg.norm(np.diff(points, axis=0), axis=1).sum())


@dataclass(frozen=True, eq=False)
class World:
    """One static world.

    :param world_id: BARN id (0-299).
    :param cylinders: Obstacle cylinder centres ``[K, 2]`` (m), radius ``CYLINDER_RADIUS``.
    :param path_cells: Reference path through the field ``[n, 2]`` (col, row), as BARN's ``path_N.npy``.
    :param source: ``"generated"`` or the path of the ``.world`` file it was read from.
    :param difficulty: Mean of ``1 / clearance`` along the reference path (1/m); higher is harder.
    """

    world_id: int
    cylinders: np.ndarray
    path_cells: np.ndarray
    source: str = "generated"
    difficulty: float = float("nan")
    reference_path: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        ref = np.concatenate([[START_POSE[:2]], cell_to_xy(self.path_cells), [GOAL_XY]], axis=0)
        object.__setattr__(self, "reference_path", ref.astype(np.float32))

    @property
    def name(self) -> str:
        """BARN file name, e.g. ``world_12.world``."""
        return f"world_{self.world_id}.world"

    @cached_property
    def path_length(self) -> float:
        """L: reference path length with start and goal (m)."""
        return path_length(self.reference_path)

    @property
    def optimal_time(self) -> float:
        """BARN optimal time L / 2 (s)."""
        return self.path_length / 2.0

    @property
    def field_density(self) -> float:
        """Occupied fraction of the 30 x 30 field."""
        c = self.cylinders
        in_field = (c[:, 1] > 5.0) & (c[:, 1] < 5.0 + FIELD_SIZE * CELL)
        return float(in_field.sum()) / FIELD_SIZE**2


def nav_metric(success: bool | np.ndarray, time: float | np.ndarray, optimal_time: float | np.ndarray) -> np.ndarray:
    """BARN navigation metric ``success * OT / clip(time, 2 OT, 8 OT)``: 0 or in [0.125, 0.5]."""
    ot = np.asarray(optimal_time, dtype=np.float64)
    return np.asarray(success, dtype=np.float64) * ot / np.clip(np.asarray(time, dtype=np.float64), 2 * ot, 8 * ot)


# ---------------------------------------------------------------------------------------------------------------
# Generated worlds


def _automaton(rng: np.random.Generator, fill: float, iterations: int, batch: int) -> np.ndarray:
    """``batch`` BARN-style cellular-automaton fields -> bool ``[batch, row, col]`` occupancy.

    Random fill with probability ``fill``, then ``iterations`` smoothing passes: a cell becomes occupied with >= 6
    occupied 8-neighbours, free with none, and keeps its state otherwise (out-of-field neighbours count as free).
    These thresholds reproduce the published worlds' field density (0.18 +- 0.05) and path length (see tests).
    """
    grid = rng.random((batch, FIELD_SIZE, FIELD_SIZE)) < fill
    _smooth(grid, iterations)
    return grid


@njit(cache=True, nogil=True)
def _smooth(grid: np.ndarray, iterations: int) -> None:
    """The automaton's smoothing passes over fields ``[B, R, C]``, in place."""
    b_count, rows, cols = grid.shape
    padded = np.zeros((rows + 2, cols + 2), dtype=np.int8)  # a free border: out-of-field neighbours
    for b in range(b_count):
        for _ in range(iterations):
            for r in range(rows):
                for c in range(cols):
                    padded[r + 1, c + 1] = grid[b, r, c]
            for r in range(rows):
                for c in range(cols):
                    n = (
                        padded[r, c] + padded[r, c + 1] + padded[r, c + 2] + padded[r + 1, c] + padded[r + 1, c + 2]
                        + padded[r + 2, c] + padded[r + 2, c + 1] + padded[r + 2, c + 2]
                    )  # fmt: skip
                    if n >= 6:
                        grid[b, r, c] = True
                    elif n == 0:
                        grid[b, r, c] = False


@njit(cache=True, nogil=True)
def _blocked(occupancy: np.ndarray) -> np.ndarray:
    """Cells ``[R, C]`` the reference path may not use: obstacles grown by one cell (BARN keeps one free cell around
    them; out-of-field cells are free)."""
    rows, cols = occupancy.shape
    blocked = np.zeros((rows, cols), dtype=np.bool_)
    for r in range(rows):
        for c in range(cols):
            if occupancy[r, c]:
                blocked[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2] = True
    return blocked


@njit(cache=True, nogil=True)
def _solvable(fields: np.ndarray) -> np.ndarray:
    """Whether each field ``[B, row, col]`` has an 8-connected passage of unblocked cells from row 0 to the last row
    ``[B]`` (a flood fill from row 0)."""
    b_count, rows, cols = fields.shape
    out = np.zeros(b_count, dtype=np.bool_)
    stack = np.empty(rows * cols, dtype=np.int64)
    for b in range(b_count):
        free = ~_blocked(fields[b])
        seen = np.zeros((rows, cols), dtype=np.bool_)
        top = 0
        for c in range(cols):
            if free[0, c]:
                seen[0, c] = True
                stack[top] = c
                top += 1
        while top and not out[b]:
            top -= 1
            r, c = divmod(stack[top], cols)
            if r == rows - 1:
                out[b] = True
            for rr in range(max(r - 1, 0), min(r + 2, rows)):
                for cc in range(max(c - 1, 0), min(c + 2, cols)):
                    if free[rr, cc] and not seen[rr, cc]:
                        seen[rr, cc] = True
                        stack[top] = rr * cols + cc
                        top += 1
    return out


def _wall_cells() -> np.ndarray:
    """The corridor walls as (col, row) cells: bottom row and both sides below the field."""
    lo, hi = _FIELD_COLS
    bottom = [(c, _WALL_ROW) for c in range(lo, hi + 1)]
    sides = [(c, r) for r in range(_WALL_ROW + 1, 0) for c in (lo, hi)]
    return np.array(bottom + sides, dtype=np.int64)


def reference_path(occupancy: np.ndarray) -> np.ndarray | None:
    """Shortest 8-connected path through the field keeping one free cell around obstacles, BARN-style.

    :param occupancy: Field occupancy ``[30, 30]`` bool, indexed ``[row, col - 1]``.
    :return: Path cells ``[n, 2]`` (col, row) from row 0 to row 29, or None if the field is unsolvable.
    """
    blocked = _blocked(occupancy)
    rows, cols = blocked.shape
    # Graph: field cells + a virtual source under row 0 and a virtual sink over row 29; the entry and exit edges
    # weigh the distance to the start and the goal, so the path is the shortest start -> goal through the field.
    idx = np.arange(rows * cols).reshape(rows, cols)
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    src, dst, weights = [], [], []
    for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
        r2, c2 = r + dr, c + dc
        ok = (r2 < rows) & (c2 >= 0) & (c2 < cols)
        a, b = idx[r[ok], c[ok]], idx[r2[ok], c2[ok]]
        free = ~blocked.ravel()[a] & ~blocked.ravel()[b]
        a, b = a[free], b[free]
        src += [a, b]
        dst += [b, a]
        weights += [np.full(2 * a.size, np.hypot(dr, dc) * CELL)]
    source, sink = rows * cols, rows * cols + 1
    centres = cell_to_xy(np.stack([np.arange(cols) + 1, np.zeros(cols)], axis=1))
    top = cell_to_xy(np.stack([np.arange(cols) + 1, np.full(cols, rows - 1)], axis=1))
    free0, free_top = ~blocked[0], ~blocked[rows - 1]
    src += [np.full(free0.sum(), source), idx[rows - 1][free_top]]
    dst += [idx[0][free0], np.full(free_top.sum(), sink)]
    weights += [
        np.linalg.norm(centres[free0] - np.array(START_POSE[:2]), axis=1),
        np.linalg.norm(top[free_top] - np.array(GOAL_XY), axis=1),
    ]
    n = rows * cols + 2
    graph = csr_matrix((np.concatenate(weights), (np.concatenate(src), np.concatenate(dst))), shape=(n, n))
    dist, pred = dijkstra(graph, indices=source, return_predecessors=True)
    if not np.isfinite(dist[sink]):
        return None
    node, cells = pred[sink], []
    while node != source:
        cells.append((node % cols + 1, node // cols))
        node = pred[node]
    return np.array(cells[::-1], dtype=np.int64)


def _difficulty(cylinders: np.ndarray, path_cells: np.ndarray) -> float:
    pts = cell_to_xy(path_cells)
    d = np.linalg.norm(pts[:, None, :] - cylinders[None, :, :], axis=2).min(axis=1) - CYLINDER_RADIUS
    return float(np.mean(1.0 / np.maximum(d, 0.05)))


_DRAWS_PER_BATCH = 64


@lru_cache(maxsize=512)
def generate_world(world_id: int) -> World:
    """Deterministic BARN-style world for ``world_id`` in 0..299.

    World ``k`` uses CA setting ``k // 25`` (fill x smoothing, as BARN's 12 x 25 layout); unsolvable draws are
    discarded: fields are drawn in batches from one seeded stream and the first one that is solvable at cell level
    and passable for the robot's footprint is kept.
    """
    check_world_id(world_id)
    setting = world_id // 25
    fill, iterations = FILL_LEVELS[setting // 3], SMOOTH_ITERS[setting % 3]
    rng = np.random.default_rng([2020, world_id])
    while True:
        fields = _automaton(rng, fill, iterations, _DRAWS_PER_BATCH)
        for k in np.flatnonzero(_solvable(fields)):
            rows, cols = np.nonzero(fields[k])
            field_cells = np.stack([cols + 1, rows], axis=1)
            cylinders = cell_to_xy(np.concatenate([_wall_cells(), field_cells], axis=0)).astype(np.float32)
            if _robot_passable(cylinders):
                path = reference_path(fields[k])
                assert path is not None, "a solvable field has a reference path"
                return World(world_id, cylinders, path, "generated", _difficulty(cylinders, path))


def _robot_passable(cylinders: np.ndarray) -> bool:
    """Whether the robot's global planner, knowing every cylinder ``[K, 2]``, finds a path from the BARN start to
    the goal: gaps narrower than the padded footprint are closed. Every published BARN test world passes this test;
    54 % of the fields that pass the cell-level :func:`_solvable` do not."""
    from envs.maps import KNOWN_CAP, KNOWN_SHAPE, stamp_known  # here: envs.maps and the planner import this module
    from envs.planners.costmap import INSCRIBED_RADIUS
    from envs.planners.global_planner import extract_path, navigation_function

    known_dist = np.full((1, *KNOWN_SHAPE), KNOWN_CAP, dtype=np.float32)
    known_id = np.full_like(known_dist, -1, dtype=np.int16)
    stamp_known(known_dist, known_id, np.zeros(len(cylinders), dtype=np.int64), cylinders, np.arange(len(cylinders)))
    goal, start = np.array(GOAL_XY, dtype=np.float32), np.array(START_POSE[:2], dtype=np.float32)
    # Inflated out to the inscribed radius only: the cells the padded footprint cannot be centred in.
    return extract_path(navigation_function(known_dist[0], INSCRIBED_RADIUS, goal), start, goal) is not None


def check_world_id(world_id: int) -> None:
    """Raise ``ValueError`` unless ``world_id`` is an int in 0..299."""
    if isinstance(world_id, bool) or not isinstance(world_id, (int, np.integer)):
        raise TypeError(f"world_id must be an int in 0..{N_WORLDS - 1}, got {world_id!r}")
    if not 0 <= world_id < N_WORLDS:
        raise ValueError(f"world_id must be in 0..{N_WORLDS - 1}, got {world_id}")


# ---------------------------------------------------------------------------------------------------------------
# Real BARN worlds

_CYLINDER_POSE = re.compile(r"<model name='unit_cylinder_\d+'>\s*<pose frame=''>([^<]+)</pose>")


def barn_world_ids(barn_dir: str | Path) -> tuple[int, ...]:
    """Ids of the worlds present in a BARN directory (``world_N.world`` with ``path_files/path_N.npy``)."""
    barn_dir = _check_barn_dir(barn_dir)
    ids = []
    for f in barn_dir.glob("world_*.world"):
        m = re.fullmatch(r"world_(\d+)\.world", f.name)
        if m and (barn_dir / "path_files" / f"path_{m.group(1)}.npy").exists():
            ids.append(int(m.group(1)))
    return tuple(sorted(ids))


@lru_cache(maxsize=512)
def load_barn_world(barn_dir: str | Path, world_id: int) -> World:
    """Read real BARN world ``world_id`` from ``barn_dir`` (the ``worlds/BARN`` directory of a BARN checkout).

    Obstacles are the ``unit_cylinder_K`` models of ``world_N.world`` (first two numbers of their ``<pose>``); the
    reference path is ``path_files/path_N.npy``.

    :raises FileNotFoundError: naming the missing file.
    :raises ValueError: naming the file whose content is malformed.
    """
    check_world_id(world_id)
    barn_dir = _check_barn_dir(barn_dir)
    world_file = barn_dir / f"world_{world_id}.world"
    path_file = barn_dir / "path_files" / f"path_{world_id}.npy"
    for f in (world_file, path_file):
        if not f.is_file():
            raise FileNotFoundError(f"BARN world {world_id}: {f} not found")
    poses = _CYLINDER_POSE.findall(world_file.read_text())
    if not poses:
        raise ValueError(f"{world_file}: no 'unit_cylinder_K' model with a <pose> found")
    try:
        cylinders = np.array([[float(v) for v in p.split()[:2]] for p in poses], dtype=np.float32)
    except ValueError as e:
        raise ValueError(f"{world_file}: malformed cylinder <pose>: {e}") from e
    path = np.load(path_file, allow_pickle=False)
    if path.ndim != 2 or path.shape[1] != 2 or path.shape[0] < 2:
        raise ValueError(f"{path_file}: expected an int array of shape (n, 2), got {path.dtype} {path.shape}")
    path = path.astype(np.int64)
    return World(world_id, cylinders, path, str(world_file), _difficulty(cylinders, path))


def _check_barn_dir(barn_dir: str | Path) -> Path:
    barn_dir = Path(barn_dir)
    if not barn_dir.is_dir():
        raise FileNotFoundError(f"BARN directory {barn_dir} not found (pass the worlds/BARN folder of a BARN checkout)")
    return barn_dir


def get_world(world_id: int, barn_dir: str | Path | None = None) -> World:
    """World ``world_id``: read from ``barn_dir`` if given, else generated."""
    return generate_world(world_id) if barn_dir is None else load_barn_world(Path(barn_dir), world_id)
