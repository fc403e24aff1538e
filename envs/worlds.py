"""BARN-style worlds: cellular-automaton obstacle fields, real BARN world files, reference paths, splits.

Frame and layout follow the published worlds and the BARN challenge's ``run.py``: a 30 x 30 field of 0.15 m cells
(grid cols 1..30, rows 1..30: -4.5 <= x <= 0 m, 5.15 <= y <= 9.65 m) whose first and last columns are walls, one
cylinder of radius 0.075 m per occupied cell (none inside solid blobs), a corridor below it closed by walls of
cylinders, the robot starting at (-2.25, 3) facing +y and the goal at (-2.25, 13).
Grid cell (col, row) -> world ``x = col * 0.15 - 4.575``, ``y = row * 0.15 + 5.075`` for reference-path cells
(``run.py``); the world files put cylinders 0.05 m lower, at ``y = row * 0.15 + 5.025`` (``0.075 + 0.15 k``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
from numba import njit
from scipy import ndimage
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
VAL_IDS: tuple[int, ...] = TRAIN_IDS[::5]
"""Validation worlds, carved from the training worlds (every 5th: 1, 7, 13, ...; 50 worlds): in-training
evaluations, ``best_model/`` and every choice of a setting use these, never the test worlds."""
FIT_IDS: tuple[int, ...] = tuple(i for i in TRAIN_IDS if i not in VAL_IDS)
"""The 200 training worlds that are not validation worlds: what a run with validation fits on."""
SPLITS: dict[str, tuple[int, ...]] = {
    "train": TRAIN_IDS,
    "fit": FIT_IDS,
    "val": VAL_IDS,
    "test": TEST_IDS,
    "all": tuple(range(N_WORLDS)),
}
"""World sets by name: ``train`` = ``fit`` + ``val``; ``test`` is for final reports only."""


def split_of(world_id: int) -> str:
    """``"test"`` for the 50 BARN test worlds, ``"train"`` for the other 250."""
    return "test" if world_id % 6 == 0 else "train"


def cell_to_xy(cells: np.ndarray) -> np.ndarray:
    """Grid cells ``[n, 2]`` (col, row) -> world points ``[n, 2]`` (x, y) in metres."""
    cells = np.asarray(cells, dtype=np.float64)
    return np.stack([cells[:, 0] * CELL - 0.075 - 4.5, cells[:, 1] * CELL + 0.075 + 5.0], axis=1)


def cylinder_xy(cells: np.ndarray) -> np.ndarray:
    """Grid cells ``[n, 2]`` (col, row) -> centres ``[n, 2]`` (m) of cylinders on them, on the published world
    files' lattice: x as :func:`cell_to_xy`, y 0.05 m below it."""
    xy = cell_to_xy(cells)
    xy[:, 1] -= 0.05
    return xy


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
        """Cylinders per cell of the 30 x 30 field (world rows 1..30; BARN leaves solid blobs hollow)."""
        y = self.cylinders[:, 1]
        in_field = (y > 5.0 + CELL) & (y < 5.0 + (FIELD_SIZE + 1) * CELL)
        return float(in_field.sum()) / FIELD_SIZE**2


def nav_metric(success: bool | np.ndarray, time: float | np.ndarray, optimal_time: float | np.ndarray) -> np.ndarray:
    """BARN navigation metric ``success * OT / clip(time, 2 OT, 8 OT)``: 0 or in [0.125, 0.5]."""
    ot = np.asarray(optimal_time, dtype=np.float64)
    return np.asarray(success, dtype=np.float64) * ot / np.clip(np.asarray(time, dtype=np.float64), 2 * ot, 8 * ot)


# ---------------------------------------------------------------------------------------------------------------
# Generated worlds: the published generator's procedure (Perille et al. 2020, ``jackal-map-creation``)
#
# A field is ``[30, 30]`` bool indexed ``[r, c]``: world cell (col ``c + 1``, row ``r + 1``). Its first and last
# columns are the corridor's side walls, carried on through the field; its bottom and top rows are open (start and
# goal sides). BARN's path files name field cells ``(c, r)``; :func:`cell_to_xy` places them as BARN's ``run.py``
# does (0.15 m left of and 0.1 m below the cylinder of the field cell they name), for published and generated
# worlds alike.

FILL_LEVELS = (0.15, 0.20, 0.25, 0.30)
SMOOTH_ITERS = (2, 3, 4)
"""BARN's 12 cellular-automaton settings (fill x smoothing), 25 worlds each."""
ROBOT_CELLS = 2
"""The reference path keeps this many free cells between the robot's centre cell and any obstacle (the published
generator's Jackal C-space: a 5 x 5 cell window)."""

# Grid rows/cols of the walls in world-cell coordinates (seen in the published worlds): the bottom wall at row -33
# spans cols 1..30; the side walls at cols 1 and 30 run from row -32 up through the field (rows 1..30).
_WALL_ROW = -33
_FIELD_COLS = (1, 30)


def _automaton(rng: np.random.Generator, fill: float, iterations: int, batch: int) -> np.ndarray:
    """``batch`` BARN cellular-automaton fields -> bool ``[batch, 30, 30]`` (see the section comment).

    Side-wall columns occupied, every other cell occupied with probability ``fill``, then ``iterations`` smoothing
    passes (all cells at once): a cell becomes occupied with >= 5 occupied 8-neighbours and free with <= 1, and
    keeps its state otherwise; beyond the side walls counts as occupied, beyond the open ends as free.
    """
    grid = rng.random((batch, FIELD_SIZE, FIELD_SIZE)) < fill
    grid[:, :, 0] = grid[:, :, -1] = True
    _smooth(grid, iterations)
    return grid


@njit(cache=True, nogil=True)
def _smooth(grid: np.ndarray, iterations: int) -> None:
    """The automaton's smoothing passes over fields ``[B, R, C]``, in place."""
    b_count, rows, cols = grid.shape
    padded = np.zeros((rows + 2, cols + 2), dtype=np.int8)
    padded[:, 0] = padded[:, cols + 1] = 1  # beyond the side walls
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
                    if n >= 5:
                        grid[b, r, c] = True
                    elif n <= 1:
                        grid[b, r, c] = False


def _passage(field: np.ndarray) -> np.ndarray | None:
    """The robot's passage through a field ``[30, 30]``: its C-space cells (no obstacle within ``ROBOT_CELLS``,
    Chebyshev) 4-connected to both open ends, as the published generator keeps a field when the largest such region
    touching the bottom row is also the largest touching the top row.

    :return: bool ``[30, 30]``, or None if the field has no passage.
    """
    size = 2 * ROBOT_CELLS + 1
    free = ~ndimage.maximum_filter(field, size=size, mode="constant", cval=False)
    labels, n = ndimage.label(free)
    if n == 0:
        return None
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0
    ends = [max(set(labels[row].tolist()) - {0}, key=sizes.__getitem__, default=0) for row in (0, -1)]
    return labels == ends[0] if ends[0] and ends[0] == ends[1] else None


_EDGE_PENALTY = 1.0
"""Extra cost (cells) of entering a passage cell at ``d <= ROBOT_CELLS`` cells from the passage's edge: ``1 / d``.
BARN's path search penalises such cells (within the 0.3 m inflation radius) but is no shortest-path search; this
weight makes the paths as long as the published ones (11.4 m on average, with start and goal)."""


def _field_path(passage: np.ndarray, entry: int, goal_side: int) -> np.ndarray:
    """Cheapest 8-connected path through ``passage`` ``[30, 30]`` from column ``entry`` of the bottom row to column
    ``goal_side`` of the top row: length plus ``_EDGE_PENALTY`` near the edge; a diagonal step may not squeeze between
    two blocked cells (as in BARN's path search).

    :return: Path cells ``[n, 2]`` (c, r), as BARN's ``path_N.npy``.
    """
    rows, cols = passage.shape
    idx = np.arange(rows * cols).reshape(rows, cols)
    edge = ndimage.distance_transform_cdt(passage, metric="taxicab")  # cells to the passage's edge (0: outside)
    penalty = np.where(edge <= ROBOT_CELLS, _EDGE_PENALTY / np.maximum(edge, 1), 0.0).ravel()
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    src, dst, weights = [], [], []
    for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
        r2, c2 = r + dr, c + dc
        ok = (r2 < rows) & (c2 >= 0) & (c2 < cols)
        r1, c1, r2, c2 = r[ok], c[ok], r2[ok], c2[ok]
        step = passage[r1, c1] & passage[r2, c2]
        if dr and dc:
            step &= passage[r1, c2] | passage[r2, c1]
        a, b = idx[r1, c1][step], idx[r2, c2][step]
        src += [a, b]
        dst += [b, a]
        weights += [np.hypot(dr, dc) + penalty[b], np.hypot(dr, dc) + penalty[a]]
    n = rows * cols
    graph = csr_matrix((np.concatenate(weights), (np.concatenate(src), np.concatenate(dst))), shape=(n, n))
    source, sink = idx[0, entry], idx[-1, goal_side]
    _, pred = dijkstra(graph, indices=source, return_predecessors=True)
    node, cells = sink, [sink]
    while node != source:
        node = pred[node]
        assert node >= 0, "entry and exit lie in one passage"
        cells.append(node)
    cells = np.array(cells[::-1])
    return np.stack([cells % cols, cells // cols], axis=1).astype(np.int64)


def _field_cylinders(field: np.ndarray) -> np.ndarray:
    """World cells (col, row) ``[k, 2]`` of a field's cylinders: BARN places none inside a solid blob (an occupied
    cell whose eight neighbours are all occupied); cells on the field's edge always get one."""
    inner = ndimage.binary_erosion(field, structure=np.ones((3, 3), dtype=bool), border_value=False)
    rows, cols = np.nonzero(field & ~inner)
    return np.stack([cols + 1, rows + 1], axis=1)


def _wall_cells() -> np.ndarray:
    """The corridor walls below the field as world cells (col, row): the bottom row and both sides."""
    lo, hi = _FIELD_COLS
    bottom = [(c, _WALL_ROW) for c in range(lo, hi + 1)]
    sides = [(c, r) for r in range(_WALL_ROW + 1, 1) for c in (lo, hi)]
    return np.array(bottom + sides, dtype=np.int64)


def _difficulty(cylinders: np.ndarray, path_cells: np.ndarray) -> float:
    pts = cell_to_xy(path_cells)
    d = np.linalg.norm(pts[:, None, :] - cylinders[None, :, :], axis=2).min(axis=1) - CYLINDER_RADIUS
    return float(np.mean(1.0 / np.maximum(d, 0.05)))


_DRAWS_PER_BATCH = 16


@lru_cache(maxsize=512)
def generate_world(world_id: int) -> World:
    """Deterministic BARN-style world for ``world_id`` in 0..299, made as the published ones were.

    World ``k`` uses CA setting ``k // 25`` (fill x smoothing, as BARN's 12 x 25 layout). Fields are drawn in
    batches from one seeded stream; the first with a passage for the robot (:func:`_passage`) is kept, and its
    reference path joins a random entry cell of the passage to a random exit cell, as BARN's paths do.
    """
    check_world_id(world_id)
    setting = world_id // 25
    fill, iterations = FILL_LEVELS[setting // 3], SMOOTH_ITERS[setting % 3]
    rng = np.random.default_rng([2020, world_id])
    while True:
        for occupancy in _automaton(rng, fill, iterations, _DRAWS_PER_BATCH):
            passage = _passage(occupancy)
            if passage is None:
                continue
            entry, goal_side = (int(rng.choice(np.flatnonzero(passage[row]))) for row in (0, -1))
            path = _field_path(passage, entry, goal_side)
            cells = np.concatenate([_wall_cells(), _field_cylinders(occupancy)], axis=0)
            cylinders = cylinder_xy(cells).astype(np.float32)
            return World(world_id, cylinders, path, "generated", _difficulty(cylinders, path))


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
