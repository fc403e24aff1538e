"""BarnNav env, wrappers and the batched VecEnv: API conformance, seeding, errors, shared logic, world splits."""

import gymnasium as gym
import numpy as np
import pytest
from _paths import BARN_DIR, needs_barn
from gymnasium.utils.env_checker import check_env
from stable_baselines3 import TD3
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs
from envs.nav_env import REWARD_PRESETS, resolve_world_ids
from envs.planners import DWA_PARAMS
from envs.worlds import TEST_IDS, TRAIN_IDS, generate_world, load_barn_world

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def rollout(env: gym.Env, seed: int, steps: int, world_id: int = 7):
    obs, info = env.reset(seed=seed, options={"world_id": world_id})
    observations, infos = [obs], [info]
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(env.unwrapped.default_params)
        observations.append(obs)
        infos.append(info)
        if terminated or truncated:
            break
    return observations, infos


@pytest.mark.parametrize(
    "env_id, kwargs",
    [
        ("BarnNav-v0", {}),
        ("BarnNav-v0", dict(goal_in_obs=True, last_action_in_obs=True, reward="applr")),
        ("BarnNavCostmap-v0", {}),
        ("BarnNavCostmap-v0", dict(velocity=True)),
    ],
)
def test_env_checkers_pass(env_id, kwargs):
    env = gym.make(env_id, **kwargs)
    check_env(env.unwrapped if env_id == "BarnNav-v0" else env, skip_render_check=True)
    sb3_check_env(env)
    if kwargs.get("goal_in_obs"):
        assert env.observation_space.shape == (721 + 2 + 7,)  # the 2023 benchmark's 729-d DWA observation


def test_names_and_defaults():
    env = gym.make("BarnNav-v0")
    assert env.unwrapped.param_names == (
        "max_vel_x",
        "max_vel_theta",
        "vx_samples",
        "vtheta_samples",
        "path_distance_bias",
        "goal_distance_bias",
        "inflation_radius",
    )
    np.testing.assert_allclose(env.unwrapped.default_params, [0.5, 1.57, 6, 20, 0.75, 1.0, 0.3])
    np.testing.assert_allclose(env.action_space.low, [0.2, 0.314, 4, 8, 0.1, 0.1, 0.1])
    np.testing.assert_allclose(env.action_space.high, [2.0, 3.14, 12, 40, 1.5, 2.0, 0.6])
    assert env.observation_space.shape == (721,)


def test_same_seed_same_episode_and_seeds_matter():
    env = gym.make("BarnNav-v0")
    obs_a, infos_a = rollout(env, seed=3, steps=8)
    obs_b, infos_b = rollout(env, seed=3, steps=8)
    for a, b in zip(obs_a, obs_b, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(infos_a[-1]["pose"], infos_b[-1]["pose"])
    obs_c, infos_c = rollout(env, seed=4, steps=8)
    assert not np.array_equal(infos_a[-1]["pose"], infos_c[-1]["pose"])  # sensor/actuation noise differs by seed


def test_world_selection():
    env = gym.make("BarnNav-v0", worlds=[12, 18])
    seen = {env.reset(seed=s)[1]["world_id"] for s in range(12)}
    assert seen == {12, 18}
    assert env.reset(options={"world_id": 18})[1]["world"] == "world_18.world"
    with pytest.raises(ValueError, match=r"world 100 is not among this env's worlds \[12, 18\]"):
        env.reset(options={"world_id": 100})
    assert gym.make("BarnNav-v0").unwrapped.world_ids == TRAIN_IDS  # training worlds by default
    assert gym.make("BarnNav-v0", worlds="test").unwrapped.world_ids == TEST_IDS
    assert len(gym.make("BarnNav-v0", worlds="all").unwrapped.world_ids) == 300


@pytest.mark.parametrize("split, refused, other", [("test", 1, "train"), ("train", 6, "test")])
def test_a_split_refuses_the_other_splits_worlds(split, refused, other):
    message = rf"world {refused} is in the '{other}' split, not in this env's '{split}' split"
    with pytest.raises(ValueError, match=message):
        gym.make("BarnNav-v0", worlds=split).reset(options={"world_id": refused})
    venv = envs.BarnNavVecEnv(2, worlds=split)
    venv.set_options([{}, {"world_id": refused}])
    with pytest.raises(ValueError, match=message):
        venv.reset()
    _, info = gym.make("BarnNav-v0", worlds="all").reset(options={"world_id": refused})
    assert info["world_id"] == refused


def test_episode_info_and_metric():
    env = gym.make("BarnNav-v0", max_steps=6)
    _, infos = rollout(env, seed=0, steps=10)
    last = infos[-1]
    assert last["status"] == "timeout" and last["steps"] == 6 and last["time"] == pytest.approx(3.0, abs=1e-4)
    assert last["nav_metric"] == 0.0 and all(i["nav_metric"] == 0.0 for i in infos)
    keys = {"success", "collision", "status", "time", "world", "opt_time", "nav_metric", "pose", "velocity"}
    assert set(last) >= keys
    assert last["opt_time"] == pytest.approx(generate_world(7).path_length / 2)
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(env.unwrapped.default_params)


def test_rewards_follow_the_presets():
    env = gym.make("BarnNav-v0", reward="applr")
    obs, info = env.reset(seed=0, options={"world_id": 7})
    y = info["pose"][1]
    for _ in range(4):
        _, reward, terminated, _, info = env.step(env.unwrapped.default_params)
        assert not terminated
        assert reward == pytest.approx(info["pose"][1] - y, abs=1e-5)  # APPLR shaping: forward progress
        y = info["pose"][1]
    assert REWARD_PRESETS["ftrl"].success == 50 and REWARD_PRESETS["ftrl"].failure == -100
    env = gym.make("BarnNav-v0", reward="ftrl", max_steps=2)
    env.reset(seed=0)
    env.step(env.unwrapped.default_params)
    assert env.step(env.unwrapped.default_params)[1] == -100  # timeout pays the failure reward


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(worlds=[300]), ValueError, r"world_id must be in 0..299, got 300"),
        (dict(worlds="valid"), ValueError, r"worlds must be one of \['all', 'fit', 'test', 'train', 'val'\]"),
        (dict(worlds=[]), ValueError, r"no world to run: worlds=\[\]"),
        (dict(reward="sparse"), ValueError, r"reward must be one of \['applr', 'barn', 'ftrl'\]"),
        (dict(planner="RRT"), ValueError, r"planner must be one of \['ddp', 'dwa', 'mppi', 'teb'\]"),
        (dict(max_steps=0), ValueError, r"max_steps must be a positive int, got 0"),
        (dict(time_step=0.33), ValueError, r"time_step must be a positive multiple of 0.05 s, got 0.33"),
        (dict(barn_dir="/nonexistent/BARN"), FileNotFoundError, r"BARN directory /nonexistent/BARN not found"),
    ],
)
def test_invalid_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        gym.make("BarnNav-v0", **kwargs)


def test_invalid_actions_and_world_ids():
    env = gym.make("BarnNav-v0").unwrapped
    env.reset(seed=0)
    bad = env.default_params.copy()
    bad[6] = 0.9
    with pytest.raises(ValueError, match=r"'inflation_radius' = 0.9 outside its range \[0.1, 0.6\]"):
        env.step(bad)
    with pytest.raises(ValueError, match=r"action must have shape \(7,\), got \(6,\)"):
        env.step(env.default_params[:6])
    with pytest.raises(ValueError, match="world_id must be in 0..299, got -1"):
        env.reset(options={"world_id": -1})
    with pytest.raises(TypeError, match="world_id must be an int"):
        env.reset(options={"world_id": "3"})
    with pytest.raises(ValueError, match=r"image_size must be \(height, width\) positive ints, got \(56,\)"):
        envs.CostmapObservation(env, image_size=(56,))


def test_costmap_image_shows_the_scene():
    env = gym.make("BarnNavCostmap-v0", velocity=True, image_size=(112, 168))
    obs, _ = env.reset(seed=0, options={"world_id": 200})
    for _ in range(6):
        obs, *_ = env.step(env.unwrapped.default_params)
    image = obs["image"]
    assert image.dtype == np.uint8 and image.shape == (112, 168, 3) and obs in env.observation_space
    colours = {tuple(c) for c in image.reshape(-1, 3)}
    assert {(255, 0, 0), (0, 0, 0), (255, 255, 0), (0, 255, 0), (0, 0, 255), (205, 205, 205)} <= colours
    assert obs["velocity"][0] > 0.1  # moving forward after 3 s


def test_normalized_params_wrapper():
    env = envs.NormalizedParams(gym.make("BarnNav-v0"))
    assert env.action_space.low.tolist() == [-1.0] * 7 and env.action_space.high.tolist() == [1.0] * 7
    np.testing.assert_allclose(env.action(-np.ones(7)), DWA_PARAMS.low, rtol=1e-6)
    np.testing.assert_allclose(env.action(np.ones(7)), DWA_PARAMS.high, rtol=1e-6)
    env.reset(seed=0)
    *_, info = env.step(np.zeros(7, dtype=np.float32))
    np.testing.assert_allclose(info["params"], [1.1, 1.727, 8, 24, 0.8, 1.05, 0.35], rtol=1e-3)  # ints rounded
    with pytest.raises(TypeError, match="wraps a BarnNav env"):
        envs.NormalizedParams(gym.make("Pendulum-v1"))


def test_vec_env_matches_single_env_and_auto_resets():
    single = gym.make("BarnNav-v0", max_steps=3)
    venv = envs.BarnNavVecEnv(2, max_steps=3)
    venv.seed(5)
    venv.set_options({"world_id": 7})
    vec_obs = venv.reset()
    obs, _ = single.reset(seed=5, options={"world_id": 7})
    np.testing.assert_array_equal(vec_obs[0], obs)  # env 0 of the VecEnv is seeded like the single env
    actions = np.tile(DWA_PARAMS.default, (2, 1))
    for _ in range(3):
        vec_obs, rewards, dones, infos = venv.step(actions)
        obs, reward, _, truncated, _ = single.step(single.unwrapped.default_params)
        assert rewards[0] == pytest.approx(reward)
    assert dones.all() and truncated
    np.testing.assert_array_equal(infos[0]["terminal_observation"], obs)
    assert infos[0]["TimeLimit.truncated"] and infos[0]["status"] == "timeout"
    assert venv.reset_infos[0]["steps"] == 0  # auto-reset


def test_costmap_vec_env_with_velocity():
    venv = envs.BarnNavVecEnv(3, observation="costmap", velocity=True, image_size=(56, 84))
    obs = venv.reset()
    assert obs["image"].shape == (3, 56, 84, 3) and obs["velocity"].shape == (3, 2)
    with pytest.raises(ValueError, match="observation must be 'laser' or 'costmap', got 'depth'"):
        envs.BarnNavVecEnv(2, observation="depth")


def test_subproc_vec_env_matches_the_single_process_vec_env():
    kwargs = dict(observation="costmap", velocity=True, image_size=(40, 60), max_steps=4, worlds="test")
    venv = envs.BarnNavVecEnv(5, **kwargs)
    workers = envs.BarnNavSubprocVecEnv(5, n_workers=2, **kwargs)
    try:
        assert list(workers.offsets) == [0, 3, 5] and workers.observation_space == venv.observation_space
        for v in (venv, workers):
            v.seed(11)
            v.set_options([{"world_id": w} for w in (0, 6, 12, 18, 24)])
        expected, got = venv.reset(), workers.reset()
        for key in ("image", "velocity"):
            np.testing.assert_array_equal(got[key], expected[key])
        assert [i["world_id"] for i in workers.reset_infos] == [0, 6, 12, 18, 24]
        actions = np.tile(DWA_PARAMS.default, (5, 1))
        actions[3, 0] = 1.5  # one worker's episodes differ: still the same as in one process
        ended = 0
        for _ in range(6):  # through the auto-reset after 4 steps
            (e_obs, e_rew, e_done, e_info), (g_obs, g_rew, g_done, g_info) = venv.step(actions), workers.step(actions)
            np.testing.assert_array_equal(g_obs["image"], e_obs["image"])
            np.testing.assert_array_equal(g_rew, e_rew)
            np.testing.assert_array_equal(g_done, e_done)
            assert [i["status"] for i in g_info] == [i["status"] for i in e_info]
            for g, e in zip(g_info, e_info, strict=True):
                assert ("terminal_observation" in g) == ("terminal_observation" in e)
                if "terminal_observation" in e:
                    ended += 1
                    terminal = g["terminal_observation"]["image"]
                    np.testing.assert_array_equal(terminal, e["terminal_observation"]["image"])
        assert ended >= 5  # every episode ended (max_steps 4) and was reset in its worker
        assert [i["steps"] for i in workers.reset_infos] == [i["steps"] for i in venv.reset_infos]
        assert workers.get_attr("num_envs", indices=[1, 4]) == [3, 2]  # each worker's own BarnNavVecEnv
        assert len(workers.get_images()) == 5
        with pytest.raises(ValueError, match="'max_vel_x' = 20 outside its range"):
            workers.step(actions * np.array([40, 1, 1, 1, 1, 1, 1], dtype=np.float32))
    finally:
        workers.close()
    assert not any(p.is_alive() for p in workers.processes)
    with pytest.raises(ValueError, match="n_envs must be an int >= n_workers"):
        envs.BarnNavSubprocVecEnv(1, n_workers=2)


def test_sb3_td3_trains_on_the_vec_env():
    model = TD3(
        "MlpPolicy",
        envs.BarnNavVecEnv(4),
        learning_starts=32,
        batch_size=16,
        seed=0,
        policy_kwargs=dict(net_arch=[32, 32]),
    )
    before = [p.detach().clone() for p in model.actor.parameters()]
    model.learn(96)
    assert model.num_timesteps == 96 and model.replay_buffer.size() == 96 // 4
    assert any(not np.array_equal(b, p.detach()) for b, p in zip(before, model.actor.parameters(), strict=True))


def test_render_rgb_array():
    env = gym.make("BarnNav-v0", render_mode="rgb_array")
    env.reset(seed=0)
    env.step(env.unwrapped.default_params)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3 and frame.std() > 0


@needs_barn
def test_real_barn_worlds_and_their_split():
    assert resolve_world_ids(None, BARN_DIR) == TRAIN_IDS  # training (sb3-vlm train --barn-dir): the 250 worlds
    assert resolve_world_ids("test", BARN_DIR) == TEST_IDS  # evaluation: the 50 held-out worlds
    env = gym.make("BarnNav-v0", barn_dir=BARN_DIR, worlds="test")
    assert env.unwrapped.world_ids == TEST_IDS
    _, info = env.reset(seed=0, options={"world_id": 0})
    world = load_barn_world(BARN_DIR, 0)
    assert info["world"] == "world_0.world" and info["opt_time"] == pytest.approx(world.optimal_time)
    with pytest.raises(ValueError, match="world 1 is in the 'train' split, not in this env's 'test' split"):
        env.reset(options={"world_id": 1})
    train = gym.make("BarnNav-v0", barn_dir=BARN_DIR)
    assert train.unwrapped.world_ids == TRAIN_IDS
    _, info = train.reset(seed=0, options={"world_id": 1})
    assert info["opt_time"] == pytest.approx(load_barn_world(BARN_DIR, 1).optimal_time)
    assert {train.reset(seed=s)[1]["world_id"] for s in range(20)} <= set(TRAIN_IDS)
    with pytest.raises(ValueError, match="world 294 is in the 'test' split, not in this env's 'train' split"):
        train.reset(options={"world_id": 294})


def test_a_barn_dir_without_the_split_is_refused(tmp_path):
    for i in TEST_IDS[:2]:  # a checkout holding only test worlds cannot train
        world = generate_world(i)
        (tmp_path / "path_files").mkdir(exist_ok=True)
        np.save(tmp_path / "path_files" / f"path_{i}.npy", world.path_cells)
        (tmp_path / f"world_{i}.world").write_text("")
    assert resolve_world_ids("test", tmp_path) == TEST_IDS[:2]
    with pytest.raises(ValueError, match=rf"no world to run: worlds='train' \({tmp_path} holds none\)"):
        resolve_world_ids(None, tmp_path)
