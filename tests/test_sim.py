"""BatchSim: seeded noise, real BARN navigation with default DWA, parameters that matter, collisions, recovery."""

import numpy as np
from _paths import BARN_DIR, needs_barn

from envs import lidar
from envs.planners.base import LocalPlanner, PlannerInput
from envs.planners.params import DWA_PARAMS
from envs.sim import COLLISION, RUNNING, SUCCESS, BatchSim
from envs.worlds import GOAL_XY, START_POSE, World, generate_world, load_barn_world, nav_metric

DEFAULT = DWA_PARAMS.default


def _params(n: int, **overrides: float) -> np.ndarray:
    p = DEFAULT.copy()
    for name, value in overrides.items():
        p[DWA_PARAMS.index(name)] = value
    return np.tile(p, (n, 1))


def _run(sim: BatchSim, params: np.ndarray, steps: int) -> list[np.ndarray]:
    """Poses ``[N, 3]`` after each step (a copy per step)."""
    poses = []
    for _ in range(steps):
        sim.step(params)
        poses.append(sim.pose.copy())
    return poses


def _until_done(sim: BatchSim, params: np.ndarray, limit: float = 100.0) -> None:
    while ((sim.status == RUNNING) & (sim.time < limit)).any():
        sim.step(params)


def test_same_seed_replays_exactly_whatever_the_batch():
    world, other = generate_world(3), generate_world(40)
    sim = BatchSim(3)
    sim.reset(0, world, seed=7)
    sim.reset(1, other, seed=1)
    sim.reset(2, world, seed=7)
    alone = BatchSim(1)
    alone.reset(0, world, seed=7)
    batch = _run(sim, _params(3), 12)
    single = _run(alone, _params(1), 12)
    for b, s in zip(batch, single, strict=True):
        np.testing.assert_array_equal(b[0], b[2])
        np.testing.assert_array_equal(b[0], s[0])
    np.testing.assert_array_equal(sim.ranges[0], alone.ranges[0])
    assert np.isfinite(sim.ranges[0]).any()


def test_different_seeds_give_different_runs():
    world = generate_world(3)
    sim = BatchSim(2)
    sim.reset(0, world, seed=1)
    sim.reset(1, world, seed=2)
    assert not np.array_equal(sim.pose[0], sim.pose[1])  # start-pose jitter
    final = _run(sim, _params(2), 12)[-1]
    assert np.abs(final[0] - final[1]).max() > 1e-3
    fin = np.isfinite(sim.ranges[0]) & np.isfinite(sim.ranges[1])
    assert fin.any() and not np.array_equal(sim.ranges[0][fin], sim.ranges[1][fin])


def test_unseeded_resets_draw_fresh_noise():
    sim = BatchSim(2)
    sim.reset(0, generate_world(3))
    sim.reset(1, generate_world(3))
    assert not np.array_equal(sim.pose[0], sim.pose[1])


def test_noise_off_is_deterministic_and_ignores_seeds():
    world = generate_world(3)
    sim = BatchSim(2, noise=False)
    sim.reset(0, world, seed=1)
    sim.reset(1, world, seed=2)
    np.testing.assert_array_equal(sim.pose[0], np.array(START_POSE, dtype=np.float32))
    for poses in _run(sim, _params(2), 12):
        np.testing.assert_array_equal(poses[0], poses[1])
    np.testing.assert_array_equal(sim.ranges[0], sim.ranges[1])


@needs_barn
def test_default_dwa_reaches_the_goal_in_real_barn_worlds():
    worlds = [load_barn_world(BARN_DIR, i) for i in (12, 204)]
    sim = BatchSim(len(worlds))
    for i, world in enumerate(worlds):
        sim.reset(i, world, seed=i)
    _until_done(sim, _params(len(worlds)))
    assert (sim.status == SUCCESS).all(), (sim.status, sim.time, sim.pose)
    assert (np.hypot(*(sim.pose[:, :2] - np.array(GOAL_XY)).T) <= 1.0).all()
    metric = nav_metric(True, sim.time, np.array([w.optimal_time for w in worlds]))
    assert ((metric >= 0.125) & (metric <= 0.5)).all()


def test_max_vel_x_sets_the_pace():
    world = generate_world(3)
    sim = BatchSim(2, noise=False)
    for i in range(2):
        sim.reset(i, world)
    params = np.concatenate([_params(1, max_vel_x=0.2), _params(1, max_vel_x=0.5)])
    _until_done(sim, params, limit=150.0)
    assert (sim.status == SUCCESS).all(), (sim.status, sim.time)
    slow, fast = sim.time
    assert slow > 1.8 * fast


class _Straight(LocalPlanner):
    """Always drives straight at 0.5 m/s: a robot driven into whatever is ahead."""

    params = DWA_PARAMS

    def compute_velocity(self, state: PlannerInput) -> np.ndarray:
        return np.tile(np.array([0.5, 0.0], dtype=np.float32), (len(state.pose), 1))


def test_driving_into_an_obstacle_is_a_collision():
    base = generate_world(3)
    ahead = np.array([[START_POSE[0], START_POSE[1] + 1.0]], dtype=np.float32)
    world = World(base.world_id, np.concatenate([base.cylinders, ahead]), base.path_cells)
    sim = BatchSim(1, planner=_Straight(), noise=False)
    sim.reset(0, world)
    _until_done(sim, _params(1), limit=10.0)
    assert sim.status[0] == COLLISION
    # The hull's front (0.229 m ahead of the centre) met the cylinder (r 0.075), within one 0.05 s tick (2.5 cm).
    assert 0.229 + 0.075 - 0.03 < ahead[0, 1] - sim.pose[0, 1] < 0.229 + 0.075
    assert sim.time[0] < 2.0


def test_no_plan_runs_the_recovery_behaviours_then_aborts():
    # A closed ring of cylinders around the start: NavFn finds no plan, the robot stays put, and after
    # planner_patience move_base clears, rotates, clears, rotates, then aborts.
    angles = np.linspace(0, 2 * np.pi, 60, endpoint=False)
    ring = np.array(START_POSE[:2]) + 0.6 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    base = generate_world(3)
    world = World(base.world_id, np.concatenate([base.cylinders, ring]).astype(np.float32), base.path_cells)
    sim = BatchSim(1, noise=False)
    sim.reset(0, world)
    # The laser cannot see the part of the ring behind the robot yet: let it be known already, as after a turn.
    sim.seen[0, len(base.cylinders) : len(world.cylinders)] = True
    sim._forget_far(0, np.inf)  # rebuilds the known map from the seen cylinders and marks the plan stale
    sim.has_plan[0] = False
    yaw = []
    for _ in range(40):
        sim.step(_params(1))
        yaw.append(sim.pose[0, 2])
    assert not sim.has_plan[0] and sim.aborted[0] and sim.status[0] == RUNNING
    assert np.hypot(*(sim.pose[0, :2] - np.array(START_POSE[:2]))) < 0.05
    turned = np.abs(np.diff(np.unwrap(yaw))).sum()
    assert 3.8 * np.pi < turned < 4.2 * np.pi  # two full in-place rotations


def test_laser_returns_match_ray_circle_intersections():
    world = generate_world(40)
    rng = np.random.default_rng(0)
    pose = np.stack([rng.uniform(-4, -0.5, 4), rng.uniform(2, 10, 4), rng.uniform(-3, 3, 4)], 1).astype(np.float32)
    cylinders = np.tile(world.cylinders[None].astype(np.float32), (4, 1, 1))
    ranges, hit = lidar.scan(pose, cylinders)
    angle = pose[:, 2, None] + lidar.BEAM_ANGLES[None]
    u = np.stack([np.cos(angle), np.sin(angle)], axis=-1)
    f = pose[:, None, :2] - cylinders
    b = np.einsum("nkd,nbd->nbk", f, u)
    disc = b**2 - ((f**2).sum(-1) - 0.075**2)[:, None, :]
    root = np.where(disc >= 0, -b - np.sqrt(np.maximum(disc, 0)), np.inf)
    root[root < 0] = np.inf
    expected = root.min(-1)
    expected[expected > lidar.RANGE_MAX] = np.inf
    np.testing.assert_array_equal(np.isfinite(ranges), np.isfinite(expected))
    seen = np.isfinite(expected)
    np.testing.assert_allclose(ranges[seen], expected[seen], atol=2e-3)
    np.testing.assert_array_equal(hit[seen], root.argmin(-1)[seen])


@needs_barn
def test_a_robot_ignores_the_other_robots_parameters():
    # The DWA of one robot must not depend on what the others in the batch are told (rollout resolution, reach).
    world = load_barn_world(BARN_DIR, 12)
    alone, mixed = BatchSim(2), BatchSim(2)
    for sim in (alone, mixed):
        for i in range(2):
            sim.reset(i, world, seed=7)
    fast = DWA_PARAMS.high.copy()
    for _ in range(20):
        alone.step(np.tile(DWA_PARAMS.default, (2, 1)))
        mixed.step(np.stack([DWA_PARAMS.default, fast]))
    np.testing.assert_array_equal(alone.pose[0], mixed.pose[0])
