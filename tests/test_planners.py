"""The four local planners as action spaces: FTRL's tables, Gymnasium conformance, and every parameter at work."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs
from envs.planners import PARAM_TABLES, PARAMS, PLANNERS, make_planner, param_table
from envs.sim import RUNNING, SUCCESS, BatchSim
from envs.worlds import generate_world

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

FTRL = {
    # ftrl_reference §4.4: names in the SFT/server order, ranges of the env RANGE_DICT.
    "teb": (
        ["max_vel_x", "max_vel_x_backwards", "max_vel_theta", "dt_ref", "min_obstacle_dist", "inflation_dist",
         "inflation_radius"],
        [[0.2, 2], [0.1, 0.7], [0.314, 3.14], [0.1, 0.35], [0.05, 0.2], [0.01, 0.2], [0.1, 0.6]],
    ),
    "mppi": (
        ["max_vel_x", "max_vel_theta", "nr_pairs_", "nr_steps_", "linear_stddev", "angular_stddev", "lambda",
         "inflation_radius"],
        [[-0.5, 2], [0.314, 3.14], [400, 800], [20, 40], [0.05, 0.15], [0.02, 0.15], [0.5, 5], [0.1, 0.6]],
    ),
    "ddp": (
        ["max_vel_x", "max_vel_theta", "nr_pairs_", "distance", "robot_radius", "inflation_radius"],
        [[0, 2], [0.314, 3.14], [400, 800], [0.01, 0.4], [0.01, 0.15], [0.1, 0.6]],
    ),
}  # fmt: skip


@pytest.mark.parametrize("planner", sorted(FTRL))
def test_tables_follow_ftrl(planner):
    names, ranges = FTRL[planner]
    table = PARAMS[planner]
    assert table.names == tuple(names)
    np.testing.assert_allclose(np.stack([table.low, table.high], axis=1), ranges, rtol=1e-6)
    assert PARAM_TABLES[planner.upper()] is table is param_table(planner.upper())
    # P + 2 next velocities: FTRL's action (and SFT head) sizes 9 / 10 / 8.
    assert len(table) + 2 == {"teb": 9, "mppi": 10, "ddp": 8}[planner]
    assert type(make_planner(planner)) is PLANNERS[planner]


@pytest.mark.parametrize(
    "make", [lambda: gym.make("BarnNav-v0", planner="rrt"), lambda: BatchSim(1, planner="rrt")], ids=["env", "sim"]
)
def test_unknown_planner_names_the_known_ones(make):
    with pytest.raises(ValueError, match="ddp.*dwa.*mppi.*teb"):
        make()


@pytest.mark.parametrize("planner", sorted(PARAMS))
@pytest.mark.parametrize("env_id", ["BarnNav-v0", "BarnNavCostmap-v0"])
def test_env_checkers_pass_for_every_planner(planner, env_id):
    env = gym.make(env_id, planner=planner)
    check_env(env.unwrapped if env_id == "BarnNav-v0" else env, skip_render_check=True)
    sb3_check_env(env)
    table = PARAMS[planner]
    assert env.action_space.shape == (len(table),)
    np.testing.assert_allclose(env.action_space.low, table.low)
    np.testing.assert_allclose(env.unwrapped.default_params, table.default)
    assert env.unwrapped.param_names == table.names


@pytest.mark.parametrize("planner", ["teb", "mppi", "ddp"])
def test_vec_env_runs_the_planner(planner):
    venv = envs.BarnNavVecEnv(2, planner=planner)
    venv.seed(0)
    venv.reset()
    _, _, _, infos = venv.step(np.tile(PARAMS[planner].default, (2, 1)))
    assert venv.action_space.shape == (len(PARAMS[planner]),)
    assert all(info["params"].shape == (len(PARAMS[planner]),) for info in infos)


def _run(planner: str, params: np.ndarray, steps: int, world_id: int = 3) -> tuple[BatchSim, np.ndarray]:
    """Robots (one per row of ``params [R, P]``) in the same generated world, noise off; their trails ``[R, T, 2]``
    and the simulator after ``steps`` steps."""
    world = generate_world(world_id)
    sim = BatchSim(len(params), planner=planner, noise=False)
    for i in range(len(params)):
        sim.reset(i, world)
    trail = []
    for _ in range(steps):
        sim.step(params)
        trail.append(sim.pose[:, :2].copy())
        if not (sim.status == RUNNING).any():
            break
    return sim, np.stack(trail, axis=1)


@pytest.mark.parametrize("planner", ["teb", "mppi", "ddp"])
def test_defaults_cross_a_generated_world(planner):
    sim, _ = _run(planner, PARAMS[planner].default[None], 200)
    assert sim.status[0] == SUCCESS, (sim.status, sim.time, sim.pose)


@pytest.mark.parametrize("planner", ["teb", "mppi", "ddp"])
def test_max_vel_x_sets_the_pace(planner):
    table = PARAMS[planner]
    params = np.tile(table.default, (2, 1))
    params[:, table.index("max_vel_x")] = (0.3, 0.8)
    sim, trail = _run(planner, params, 8)
    # Distance covered in the first 4 s, and the fastest speed measured: the low cap holds, the high one goes faster.
    covered = np.hypot(*(trail[:, -1] - trail[:, 0]).T)
    assert covered[1] > 1.5 * covered[0], covered
    assert np.abs(sim.velocity[0, 0]) <= 0.3 + 1e-3


_PARAMETERS = [(p, name) for p in sorted(PARAMS) for name in PARAMS[p].names]
_CONTEXT = {
    ("teb", "inflation_dist"): {"min_obstacle_dist": 0.05, "max_vel_x": 1.0},
    ("teb", "dt_ref"): {"max_vel_x": 1.0},
}
"""Settings a parameter needs to act: teb's inflation term matters only beyond ``min_obstacle_dist`` (whose default,
0.2, is the top of ``inflation_dist``'s range) and weighs little (0.1), so it shows where the band is pressed
(faster); the band's resolution ``dt_ref`` acts only below its segment cap (faster)."""


@pytest.mark.parametrize("planner, name", _PARAMETERS, ids=[f"{p}-{n}" for p, n in _PARAMETERS])
def test_every_parameter_changes_the_behaviour(planner, name):
    """The same worlds and start, noise off: the parameter at its low and at its high bound (the others at their
    defaults) drive the robot along paths at least 3 cm apart within 15 s in one of two worlds."""
    table = PARAMS[planner]
    params = np.tile(table.default, (2, 1))
    for other, value in _CONTEXT.get((planner, name), {}).items():
        params[:, table.index(other)] = value
    params[:, table.index(name)] = (table.low[table.index(name)], table.high[table.index(name)])
    gaps = [np.hypot(*(trail[0] - trail[1]).T).max() for trail in (_run(planner, params, 30, w)[1] for w in (5, 8))]
    assert max(gaps) > 0.03, f"{planner} {name}: trails at most {gaps} m apart"
