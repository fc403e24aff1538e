"""Why the simulated Jackal collides as the real one does: skid-steer slip, footprint clearing, blind escapes; and
the orderings that make speed and thin inflation pay in collisions on the real BARN test worlds."""

import numpy as np
import pytest
from _paths import BARN_DIR, needs_barn

from envs import robot
from envs.obstacle_layer import FOOTPRINT_CLEARING
from envs.planners.params import DWA_PARAMS
from envs.sim import COLLISION, RUNNING, SUCCESS, BatchSim
from envs.worlds import START_POSE, TEST_IDS, World, generate_world, load_barn_world, nav_metric


def test_skid_steer_slides_outward_and_caps_the_yaw_rate_in_fast_turns():
    wheels = np.array([[0.5, 1.0], [2.0, 1.0], [2.0, -1.0], [2.0, 3.0], [0.0, 1.57]], dtype=np.float32)
    body, lateral = robot.skid_steer(wheels)
    # Outward (right in a left turn), at a slip angle in proportion to the centripetal acceleration v * w: the
    # sideways speed grows as v^2 w (4x the speed: 16x the slide).
    assert lateral[0] < 0 < lateral[2]
    np.testing.assert_allclose(lateral[1] / lateral[0], 16.0, rtol=1e-5)
    assert lateral[4] == 0.0  # turning in place: no centripetal acceleration
    # 2 m/s x 3 rad/s needs 6 m/s^2: the tyres hold 4.9, so the body yaws at 4.9 / 2.
    np.testing.assert_allclose(body[3], [2.0, robot.MAX_LATERAL_ACC / 2.0], rtol=1e-5)
    np.testing.assert_array_equal(body[:3], wheels[:3])
    # A left turn drifts to the right of where the odometry's arc ends.
    pose = np.zeros((1, 3), dtype=np.float32)
    slid = robot.integrate(pose, body[1:2], lateral=lateral[1:2])
    ideal = robot.integrate(pose, body[1:2])
    assert slid[0, 1] < ideal[0, 1]


def _world_with(extra: np.ndarray) -> World:
    base = generate_world(3)
    return World(base.world_id, np.concatenate([base.cylinders, extra]).astype(np.float32), base.path_cells)


def test_footprint_clearing_hides_obstacles_under_the_padded_footprint():
    # The robot starts facing +y. One cylinder in the padding band beside it (its centre 0.30 m to the side: 1.7 cm
    # clear of the wheels, inside the padded footprint's 0.265 m + clearing margin), one a bit farther out.
    x, y = START_POSE[:2]
    beside = np.array([[x + 0.30, y], [x - 0.40, y]], dtype=np.float32)
    world = _world_with(beside)
    k = len(world.cylinders)
    sim = BatchSim(1, noise=False)
    sim.reset(0, world)
    assert 0.265 + FOOTPRINT_CLEARING > 0.30 > robot.WIDTH / 2 + 0.075
    assert sim.status[0] == RUNNING
    assert not sim.seen[0, k - 2] and sim.seen[0, k - 1]
    assert not (sim.known_id[0] == k - 2).any()
    # Seen from outside the footprint (the robot 1 m behind it), it is marked again.
    sim.pose[0] = (x + 0.30, y - 1.0, np.pi / 2)
    sim._scan(np.array([0]), 0)
    assert sim.seen[0, k - 2]
    assert (sim.known_id[0] == k - 2).any()


def test_escape_backs_up_blind_into_what_is_behind():
    # A pocket: a wall 0.35 m ahead and walls at the sides leave no valid arc or in-place rotation, so the DWA backs
    # up at escape_vel without checking its footprint, into a cylinder 0.12 m behind the wheels.
    x, y = START_POSE[:2]
    xs = np.arange(-0.6, 0.61, 0.15)
    ahead = np.stack([x + xs, np.full_like(xs, y + 0.229 + 0.075 + 0.35)], axis=1)
    ys = np.arange(-0.2, 0.5, 0.15)
    sides = np.concatenate([np.stack([np.full_like(ys, x + s), y + ys], axis=1) for s in (-0.40, 0.40)])
    behind = np.array([[x, y - 0.229 - 0.075 - 0.12]])
    world = _world_with(np.concatenate([ahead, sides, behind]))
    sim = BatchSim(1, noise=False)
    sim.reset(0, world)
    sim.seen[0, len(world.cylinders) - len(behind) - len(sides) - len(ahead) :] = True
    sim._forget_far(0, np.inf)  # the pocket fully known, as after a look around
    start = sim.pose[0].copy()
    for _ in range(10):
        sim.step(np.tile(DWA_PARAMS.default, (1, 1)))
        if sim.status[0] != RUNNING:
            break
    assert sim.status[0] == COLLISION
    assert sim.pose[0, 1] < start[1] - 0.1  # it backed into the cylinder behind


def _outcomes(worlds: list, runs: int, **overrides: float) -> dict[str, float]:
    """Success, collision rates and mean nav metric of fixed DWA parameters on ``worlds`` x ``runs`` seeded runs."""
    params = DWA_PARAMS.default.copy()
    for name, value in overrides.items():
        params[DWA_PARAMS.index(name)] = value
    episodes = [w for _ in range(runs) for w in worlds]
    sim = BatchSim(len(episodes))
    for i, world in enumerate(episodes):
        sim.reset(i, world, seed=1000 * world.world_id + i // len(worlds))
    table = np.tile(params, (sim.n, 1))
    while ((sim.status == RUNNING) & (sim.time < 100.0 - 1e-3)).any():
        sim.step(table)
    success = sim.status == SUCCESS
    metric = nav_metric(success, sim.time, np.array([w.optimal_time for w in episodes]))
    time_success = float(sim.time[success].mean())
    return {"success": success.mean(), "collision": (sim.status == COLLISION).mean(), "metric": metric.mean(),
            "time": time_success}  # fmt: skip


@needs_barn
def test_full_speed_pays_in_collisions():
    """One seeded run per real test world: at 2 m/s the skid-steer's slide costs far more contacts than it saves."""
    worlds = [load_barn_world(BARN_DIR, i) for i in TEST_IDS]
    default, fast = _outcomes(worlds, 1), _outcomes(worlds, 1, max_vel_x=2.0)
    assert fast["collision"] > default["collision"] + 0.2
    assert fast["success"] < default["success"]


@pytest.mark.slow
@needs_barn
def test_speed_and_thin_inflation_pay_in_collisions_on_the_real_test_worlds():
    """50 test worlds x 10 seeded runs: default DWA near Gazebo's figures; faster or thinner costs collisions."""
    worlds = [load_barn_world(BARN_DIR, i) for i in TEST_IDS]
    default = _outcomes(worlds, 10)
    assert 0.02 <= default["collision"] <= 0.08
    assert 0.80 <= default["success"] <= 0.95
    assert 28.0 <= default["time"] <= 40.0
    assert 0.13 <= default["metric"] <= 0.21
    fast = _outcomes(worlds, 10, max_vel_x=2.0)
    assert fast["collision"] > default["collision"] and fast["success"] <= default["success"]
    saturated = _outcomes(
        worlds, 10, max_vel_x=2.0, max_vel_theta=3.14, vx_samples=4, vtheta_samples=40, inflation_radius=0.1
    )
    assert saturated["success"] < 0.5
    thin, wide = _outcomes(worlds, 10, inflation_radius=0.1), _outcomes(worlds, 10, inflation_radius=0.6)
    assert thin["collision"] > wide["collision"]
