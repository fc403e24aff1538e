"""BARN worlds: the generator against the published worlds (layout, statistics, drivability), import structure."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _paths import BARN_DIR, needs_barn
from scipy import ndimage

from envs.maps import KNOWN_CAP, KNOWN_SHAPE, stamp_known
from envs.planners.costmap import INSCRIBED_RADIUS
from envs.planners.global_planner import extract_path, navigation_function
from envs.worlds import (
    CELL,
    GOAL_XY,
    N_WORLDS,
    ROBOT_CELLS,
    START_POSE,
    TEST_IDS,
    World,
    generate_world,
    load_barn_world,
)

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = {
    "field_density": (0.1856, 0.0565, 0.113, 0.182, 0.267),
    "path_length": (11.417, 0.743, 10.661, 11.227, 12.488),
}
"""Mean, standard deviation and 10/50/90 % quantiles of field density and reference path length (m) over the 300
published worlds (checked against the data by ``test_published_statistics``)."""


def _grid(world: World) -> np.ndarray:
    """Occupancy of world cells ``[row + 33, col]`` (rows -33..30, cols 0..31) from the cylinder centres, which lie
    on the published lattice ``x = col * 0.15 - 4.575``, ``y = row * 0.15 + 5.025``."""
    col, row = (world.cylinders - np.array([-4.575, 5.025])).T / CELL
    np.testing.assert_allclose([col, row], np.round([col, row]), atol=1e-4)
    col, row = np.round(col).astype(int), np.round(row).astype(int)
    grid = np.zeros((64, 32), dtype=bool)
    grid[row + 33, col] = True
    return grid


def _solid(field: np.ndarray) -> bool:
    """Whether some cylinder of a field ``[30, 32]`` has cylinders all around it (BARN leaves solid blobs hollow)."""
    return ndimage.binary_erosion(field[:, 1:31], np.ones((3, 3), dtype=bool), border_value=False).any()


def _stats(worlds: list[World]) -> dict[str, np.ndarray]:
    """Mean, standard deviation and 10/50/90 % quantiles of field density and path length over ``worlds``."""
    out = {}
    for key in PUBLISHED:
        values = np.array([getattr(w, key) for w in worlds])
        out[key] = np.array([values.mean(), values.std(), *np.quantile(values, [0.1, 0.5, 0.9])])
    return out


def _planner_finds_a_path(world: World) -> bool:
    """Whether the robot's global planner, knowing every cylinder, plans from the start to the goal with the map
    inflated to the inscribed radius only: no gap on the way is narrower than the padded footprint."""
    c = world.cylinders
    known_dist = np.full((1, *KNOWN_SHAPE), KNOWN_CAP, dtype=np.float32)
    known_id = np.full_like(known_dist, -1, dtype=np.int16)
    stamp_known(known_dist, known_id, np.zeros(len(c), dtype=np.int64), c, np.arange(len(c)))
    goal, start = np.array(GOAL_XY, dtype=np.float32), np.array(START_POSE[:2], dtype=np.float32)
    return extract_path(navigation_function(known_dist[0], INSCRIBED_RADIUS, goal), start, goal) is not None


@pytest.mark.parametrize("world_id", [0, 100, 299])
def test_generated_worlds_have_the_published_layout(world_id):
    world = generate_world(world_id)
    grid = _grid(world)
    corridor, field = grid[: 33 + 1], grid[33 + 1 :]  # rows -33..0, rows 1..30
    assert corridor[0, 1:31].all() and not corridor[0, [0, 31]].any()  # the bottom wall
    assert corridor[1:, [1, 30]].all() and not corridor[1:, 2:30].any()  # the side walls up to row 0
    assert field[:, [1, 30]].all() and not field[:, [0, 31]].any()  # the side walls through the field
    assert 0.05 < world.field_density < 0.35
    assert not _solid(field)
    # The reference path keeps ROBOT_CELLS free cells around the robot's cell; like BARN's path files it names
    # field cells (c, r), i.e. world cell (c + 1, r + 1).
    path = world.path_cells
    assert path[0, 1] == 0 and path[-1, 1] == 29 and (np.abs(np.diff(path, axis=0)).max(axis=1) == 1).all()
    near = ndimage.maximum_filter(field[:, 1:31], size=2 * ROBOT_CELLS + 1, mode="constant", cval=False)
    assert not near[path[:, 1], path[:, 0]].any()
    again = generate_world.__wrapped__(world_id)
    np.testing.assert_array_equal(again.cylinders, world.cylinders)
    np.testing.assert_array_equal(again.path_cells, world.path_cells)


def test_generated_worlds_match_the_published_statistics():
    generated = [generate_world(i) for i in range(N_WORLDS)]
    stats = _stats(generated)
    np.testing.assert_allclose(stats["field_density"], PUBLISHED["field_density"], atol=0.01)
    np.testing.assert_allclose(stats["field_density"][0], PUBLISHED["field_density"][0], atol=0.005)
    np.testing.assert_allclose(stats["path_length"], PUBLISHED["path_length"], atol=0.15)  # m
    np.testing.assert_allclose(stats["path_length"][0], PUBLISHED["path_length"][0], atol=0.05)
    # The robot's planner finds a way through every generated world, as through every published one.
    assert all(_planner_finds_a_path(w) for w in generated[::5])


@needs_barn
def test_published_statistics():
    real = [load_barn_world(BARN_DIR, i) for i in range(N_WORLDS)]
    for key, values in _stats(real).items():
        np.testing.assert_allclose(values, PUBLISHED[key], atol=1e-3, err_msg=key)
    assert all(_planner_finds_a_path(real[i]) for i in TEST_IDS)
    corridor = _grid(generate_world(0))[: 33 + 1]
    for world in real[::25]:
        grid = _grid(world)  # on the lattice the generated worlds use
        np.testing.assert_array_equal(grid[: 33 + 1], corridor)
        assert grid[33 + 1 :, [1, 30]].all() and not _solid(grid[33 + 1 :])  # as generated


@pytest.mark.slow
def test_default_dwa_drives_through_generated_worlds_as_through_published_ones():
    args = [sys.executable, str(REPO / "benchmarks" / "generated_worlds.py"), "--runs", "2"]
    if BARN_DIR.is_dir():
        args += ["--barn-dir", str(BARN_DIR)]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=600).stdout
    report = json.loads(out.strip().splitlines()[-1])
    generated = report["generated"]["default_dwa"]
    assert generated["episodes"] == 100 and generated["success"] >= 0.8
    if "real" in report:
        assert abs(generated["success"] - report["real"]["default_dwa"]["success"]) <= 0.1


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Which of ``modules`` the module at ``path`` imports, anywhere in its body (``from a import b`` imports
    ``a.b`` when that is a module, else ``a``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module for a in node.names
            }
    return names & modules


def import_cycle(root: Path) -> list[str] | None:
    """The first import cycle among the modules of the package at ``root``, or None."""
    files = {
        ".".join(p.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__"): p
        for p in root.rglob("*.py")
    }
    graph = {m: sorted(_imports(p, set(files)) - {m}) for m, p in files.items()}
    state: dict[str, int] = {}  # 1: on the current trail, 2: done

    def visit(m: str, trail: list[str]) -> list[str] | None:
        state[m] = 1
        for n in graph[m]:
            if state.get(n) == 1:
                return [*trail, m][[*trail, m].index(n) :] + [n]
            if n not in state and (cycle := visit(n, [*trail, m])):
                return cycle
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m, [])):
            return cycle
    return None


def test_envs_has_no_import_cycle():
    cycle = import_cycle(REPO / "envs")
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
