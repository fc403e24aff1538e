"""RayVecEnv on a real local Ray instance (2 CPUs): the same steps as BarnNavVecEnv/DummyVecEnv for the same seeds,
SB3's VecEnv contract, stock TD3 and VLMTD3 training through it, and actor processes killed by pid mid-run."""

from __future__ import annotations

import csv
import functools
import os
import signal
import sys
import threading
import time
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

ray = pytest.importorskip("ray")

from stable_baselines3 import PPO, TD3  # noqa: E402
from stable_baselines3.common.callbacks import BaseCallback  # noqa: E402
from stable_baselines3.common.logger import configure  # noqa: E402
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor  # noqa: E402

import envs  # noqa: E402
from envs.planners import DWA_PARAMS  # noqa: E402
from sb3_vlm.callbacks import ActorRestartCallback  # noqa: E402
from sb3_vlm.distributed import AsyncLearner, BufferDirectoryBridge, RayVecEnv  # noqa: E402


class CountingEnv(gym.Env):
    """Observation ``[tag, pid, episode, t]``: which env, which process, which episode, which step; episodes end by
    truncation after ``horizon`` steps. ``delay`` seconds per step leave time to kill a process mid-step."""

    def __init__(self, tag: int, horizon: int = 7, delay: float = 0.0) -> None:
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(4,), dtype=np.float64)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.tag, self.horizon, self.delay = tag, horizon, delay
        self.episode, self.t = -1, 0

    def _obs(self) -> np.ndarray:
        return np.array([self.tag, os.getpid(), self.episode, self.t], dtype=np.float64)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.episode, self.t = self.episode + 1, 0
        return self._obs(), {"episode": self.episode}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        time.sleep(self.delay)
        self.t += 1
        return self._obs(), float(self.t), False, self.t >= self.horizon, {}


# The actors unpickle the env factories: ship this module's classes by value (the workers do not import tests/).
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def counting_fns(n: int, **kwargs: Any) -> list:
    return [functools.partial(CountingEnv, tag, **kwargs) for tag in range(n)]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024**2, log_to_driver=False)
    yield
    ray.shutdown()


def assert_same(got: Any, expected: Any) -> None:
    """Exact equality of observations, infos and their nested arrays."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and got.keys() == expected.keys()
        for key in expected:
            assert_same(got[key], expected[key])
    elif isinstance(expected, list | tuple):
        assert len(got) == len(expected)
        for g, e in zip(got, expected, strict=True):
            assert_same(g, e)
    elif isinstance(expected, np.ndarray):
        np.testing.assert_array_equal(got, expected)
        assert got.dtype == expected.dtype
    else:
        assert got == expected


def test_matches_barn_nav_vec_env_for_the_same_seeds():
    kwargs = dict(observation="costmap", velocity=True, image_size=(40, 60), max_steps=4, worlds="test")
    expected_env, venv = envs.BarnNavVecEnv(5, **kwargs), RayVecEnv(5, n_actors=2, **kwargs)
    try:
        assert list(venv.offsets) == [0, 3, 5] and venv.observation_space == expected_env.observation_space
        for v in (expected_env, venv):
            v.seed(11)
            v.set_options([{"world_id": w} for w in (0, 6, 12, 18, 24)])
        assert_same(venv.reset(), expected_env.reset())
        assert_same(venv.reset_infos, expected_env.reset_infos)
        actions = np.tile(DWA_PARAMS.default, (5, 1))
        actions[3, 0] = 1.5  # the second actor's episodes differ from the first's: still the same as in one batch
        ended = 0
        for _ in range(6):  # through the auto-reset after 4 steps
            got, expected = venv.step(actions), expected_env.step(actions)
            assert_same(got, expected)  # obs, rewards, dones, infos (terminal_observation, TimeLimit.truncated)
            assert_same(venv.reset_infos, expected_env.reset_infos)
            ended += sum("terminal_observation" in info for info in got[3])
        assert ended == 5 and venv.actor_restarts == 0
    finally:
        venv.close()


def test_matches_dummy_vec_env_for_gymnasium_factories():
    make = functools.partial(gym.make, "Pendulum-v1", max_episode_steps=5)
    expected_env, venv = DummyVecEnv([make] * 3), RayVecEnv(env_fns=[make] * 3, n_actors=2)
    try:
        assert venv.seed(3) == expected_env.seed(3) == [3, 4, 5]
        assert_same(venv.reset(), expected_env.reset())
        rng = np.random.default_rng(0)
        for _ in range(8):
            actions = rng.uniform(-2, 2, size=(3, 1)).astype(np.float32)
            assert_same(venv.step(actions), expected_env.step(actions))
            assert_same(venv.reset_infos, expected_env.reset_infos)
        assert venv.get_attr("spec", indices=[2])[0].id == "Pendulum-v1"
        assert venv.env_is_wrapped(gym.wrappers.TimeLimit) == [True] * 3
    finally:
        venv.close()


def test_actors_step_in_parallel():
    venv = RayVecEnv(env_fns=counting_fns(2, delay=0.5), n_actors=2)  # one env per actor, 0.5 s per step
    try:
        venv.reset()
        t0 = time.perf_counter()
        venv.step_async(np.zeros((2, 1), dtype=np.float32))
        sent = time.perf_counter() - t0
        obs, _, _, _ = venv.step_wait()
        elapsed = time.perf_counter() - t0
        assert sent < 0.25 and 0.5 <= elapsed < 0.9  # step_async returns at once; both actors slept together
        assert obs[:, 3].tolist() == [1, 1]
    finally:
        venv.close()


def test_vec_env_contract():
    venv = VecMonitor(RayVecEnv(3, n_actors=2, max_steps=3))  # wrappers see an ordinary VecEnv
    inner: RayVecEnv = venv.unwrapped
    try:
        venv.seed(0)
        obs = venv.reset()
        assert obs.shape == (3, *venv.observation_space.shape) and obs.dtype == venv.observation_space.dtype
        assert all(o in venv.observation_space for o in obs)
        actions = np.tile(DWA_PARAMS.default, (3, 1))
        for _ in range(3):
            obs, rewards, dones, infos = venv.step(actions)
        assert rewards.shape == dones.shape == (3,) and dones.all()  # max_steps 3: every episode ended...
        assert all("episode" in info and info["TimeLimit.truncated"] for info in infos)  # ...by its time limit
        assert inner.get_attr("num_envs") == [2, 2, 1]  # each actor's own BarnNavVecEnv
        ((reset_obs, info),) = inner.env_method("reset", seed=5, options={"world_id": 1}, indices=[2])
        assert info["world_id"] == 1 and reset_obs.shape == venv.observation_space.shape
        assert len(inner.get_images()) == 3 and len(set(inner.actor_pids())) == 2
        with pytest.raises(AttributeError, match="no per-env attributes"):
            inner.set_attr("max_steps", 5, indices=[0])
        with pytest.raises(ValueError, match="'max_vel_x' = 20 outside its range"):
            venv.step(actions * np.array([40, 1, 1, 1, 1, 1, 1], dtype=np.float32))
        with pytest.raises(RuntimeError, match="without step_async"):
            inner.step_wait()
    finally:
        venv.close()
    deadline = time.monotonic() + 30
    with pytest.raises(ray.exceptions.RayActorError):  # closed: the actors are gone, not restarted
        while time.monotonic() < deadline:  # (ray.kill is asynchronous)
            ray.get(inner.actors[0].ping.remote())
            time.sleep(0.1)
    with pytest.raises(ValueError, match=r"n_envs must be an int >= 2 \(one env per actor at least\), got 1"):
        RayVecEnv(1, n_actors=2)
    with pytest.raises(TypeError, match="exclusive"):
        RayVecEnv(env_fns=counting_fns(2), max_steps=3)


@pytest.mark.parametrize("algo", ["td3", "ppo"])
def test_stock_sb3_trains_through_ray(algo):
    venv = RayVecEnv(4, n_actors=2, max_steps=50)
    small = dict(seed=0, batch_size=32, policy_kwargs=dict(net_arch=[32, 32]))
    if algo == "td3":
        model = TD3("MlpPolicy", venv, learning_starts=100, **small)
    else:
        model = PPO("MlpPolicy", venv, n_steps=32, n_epochs=2, **small)
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(256 if algo == "ppo" else 300)
    assert model.num_timesteps == (256 if algo == "ppo" else 300)
    assert any(not np.array_equal(b, p.detach()) for b, p in zip(before, model.policy.parameters(), strict=True))
    venv.close()


def test_vlm_td3_trains_through_ray():
    from sb3_vlm import VLMTD3

    venv = RayVecEnv(2, n_actors=2, observation="costmap", image_size=(56, 84), max_steps=40)
    model = VLMTD3(
        "VLMPolicy",
        venv,
        policy_kwargs={"backbone": "tiny", "freeze_vlm": True},
        batch_size=8,
        learning_starts=24,
        buffer_size=200,
        seed=0,
    )
    head = {k: v.detach().clone() for k, v in model.actor.mu.state_dict().items()}
    model.learn(40)
    assert model.num_timesteps == 40 and model.replay_buffer.observations.dtype == np.uint8
    assert any(not np.array_equal(v, model.actor.mu.state_dict()[k]) for k, v in head.items())
    venv.close()


class KillActor(BaseCallback):
    """Kill the process of actor ``w`` (SIGKILL, by pid) once ``num_timesteps`` reaches ``at``."""

    def __init__(self, w: int, at: int) -> None:
        super().__init__()
        self.w, self.at = w, at
        self.killed_pid: int | None = None

    def _on_step(self) -> bool:
        if self.killed_pid is None and self.num_timesteps >= self.at:
            self.killed_pid = self.training_env.unwrapped.actor_pids()[self.w]
            os.kill(self.killed_pid, signal.SIGKILL)
        return True


def test_a_killed_actor_restarts_and_training_loses_and_repeats_nothing(tmp_path):
    venv = RayVecEnv(env_fns=counting_fns(4), n_actors=2)
    model = TD3("MlpPolicy", venv, learning_starts=40, batch_size=16, buffer_size=1000, train_freq=4, seed=0)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    kill = KillActor(w=1, at=80)
    with pytest.warns(RuntimeWarning, match="actor 1 died"):
        model.learn(240, callback=[kill, ActorRestartCallback()], log_interval=1)
    assert model.num_timesteps == 240 and venv.actor_restarts == 1 and venv.restarts_per_actor == [0, 1]
    new_pid = venv.actor_pids()[1]
    assert new_pid != kill.killed_pid

    # Every transition returned is in the buffer once: 240 steps = 60 rows of 4 envs, no two observations equal
    # (each carries env, process, episode, step) and each env's chain is unbroken: the next row starts where the
    # previous ended, unless that step ended the episode.
    buffer = model.replay_buffer
    rows = buffer.pos
    assert rows == 60 and not buffer.full
    obs, next_obs = buffer.observations[:rows], buffer.next_observations[:rows]
    ended = (buffer.dones[:rows] + buffer.timeouts[:rows]) > 0
    assert len({tuple(o) for o in obs.reshape(-1, 4)}) == rows * 4
    restart_rows = []
    for e in range(4):
        for k in range(rows - 1):
            if ended[k, e]:
                assert obs[k + 1, e, 3] == 0  # a new episode starts
            else:
                np.testing.assert_array_equal(obs[k + 1, e], next_obs[k, e])
            if obs[k + 1, e, 1] != obs[k, e, 1]:  # the process changed: actor 1's envs only, once
                restart_rows.append((e, k))
                assert buffer.timeouts[k, e] == 1  # a time-limit truncation: SB3 bootstraps through it
                np.testing.assert_array_equal(next_obs[k, e], obs[k, e])  # terminal = last observation returned
                assert obs[k + 1, e, 1] == new_pid and obs[k + 1, e, 3] == 0
    # killed after row 19 (step 80): row 20 is the truncated step, row 21 the fresh episodes of actor 1 (envs 2, 3)
    assert restart_rows == [(2, 20), (3, 20)]

    model.logger.close()
    with open(tmp_path / "progress.csv") as file:
        # (rows without the key: SB3 dumps once per finished episode, several in one step)
        logged = [
            row["distributed/actor_restarts"] for row in csv.DictReader(file) if row["distributed/actor_restarts"]
        ]
    assert logged[0] == "0" and logged[-1] == "1"
    venv.close()


def test_an_actor_killed_mid_step_reports_its_episodes_truncated():
    venv = RayVecEnv(env_fns=counting_fns(3, delay=0.5), n_actors=2)
    try:
        first = venv.reset()
        pids = venv.actor_pids()
        venv.step_async(np.zeros((3, 1), dtype=np.float32))
        time.sleep(0.2)  # actor 0 is inside its 0.5 s step
        os.kill(pids[0], signal.SIGKILL)
        with pytest.warns(RuntimeWarning, match="actor 0 died"):
            obs, rewards, dones, infos = venv.step_wait()
        assert dones.tolist() == [True, True, False] and rewards.tolist() == [0.0, 0.0, 1.0]
        for i in (0, 1):
            assert infos[i]["TimeLimit.truncated"] and infos[i]["actor_restarted"]
            np.testing.assert_array_equal(infos[i]["terminal_observation"], first[i])
            assert obs[i, 1] != pids[0] and obs[i, 3] == 0 and venv.reset_infos[i] == {"episode": 0}
        assert obs[2].tolist() == [2, pids[1], 0, 1] and "terminal_observation" not in infos[2]
        obs, _, dones, _ = venv.step(np.zeros((3, 1), dtype=np.float32))
        assert not dones.any() and obs[:, 3].tolist() == [1, 1, 2]  # training goes on from the fresh episodes
    finally:
        venv.close()


def test_an_actor_past_max_restarts_raises():
    venv = RayVecEnv(env_fns=counting_fns(2), n_actors=2, max_restarts=0, restart_timeout=20)
    venv.reset()
    os.kill(venv.actor_pids()[0], signal.SIGKILL)
    with pytest.raises(RuntimeError, match=r"actor 0 .* is dead after 1 restarts \(max_restarts=0\)"):
        with pytest.warns(RuntimeWarning):
            venv.step(np.zeros((2, 1), dtype=np.float32))
    venv.close()


# -- asynchronous collection -------------------------------------------------------------------------------------
def test_async_learner_trains_td3_with_two_collectors_and_versioned_weights(tmp_path):
    model = TD3(
        "MlpPolicy",
        envs.BarnNavVecEnv(2, max_steps=30),
        learning_starts=64,
        batch_size=32,
        seed=0,
        policy_kwargs=dict(net_arch=[32, 32]),
    )
    model.set_logger(configure(str(tmp_path), ["csv"]))
    before = [p.detach().clone() for p in model.actor.parameters()]
    learner = AsyncLearner(model, n_collectors=2, steps_per_chunk=8, sync_every=8, max_policy_lag=4, max_steps=30)
    try:
        learner.learn(400, log_interval=2)
        assert model.num_timesteps == learner.transitions_added == 400 and model.replay_buffer.size() == 200
        assert all(n > 0 for n in learner.chunks_per_collector) and sum(learner.chunks_per_collector) == 25
        # staleness bounded: every chunk trained on was collected at most 4 versions ago (older ones were dropped)
        assert learner.version > 1 and max(learner.lags) <= 4 and len(learner.lags) == 25
        versions = [version for _, version in learner.collector_versions()]
        assert max(versions) >= 1 and all(0 <= v <= learner.version for v in versions)  # published weights act
        buffer = model.replay_buffer  # 8-row chunks: each ends done or truncated, so n-step returns stay in a chunk
        assert ((buffer.dones[7:200:8] + buffer.timeouts[7:200:8]) > 0).all()
        assert any(not np.array_equal(b, p.detach()) for b, p in zip(before, model.actor.parameters(), strict=True))
    finally:
        learner.close()
    model.logger.close()
    with open(tmp_path / "progress.csv") as file:
        rows = list(csv.DictReader(file))
    assert {"distributed/policy_lag_mean", "distributed/weights_version", "train/actor_loss"} <= rows[-1].keys()
    assert int(rows[-1]["distributed/weights_version"]) == learner.version


def test_async_learner_trains_vlm_td3():
    from sb3_vlm import VLMTD3

    kwargs = dict(observation="costmap", image_size=(56, 84), max_steps=20)
    model = VLMTD3(
        "VLMPolicy",
        envs.BarnNavVecEnv(1, **kwargs),
        policy_kwargs={"backbone": "tiny", "freeze_vlm": True},
        batch_size=8,
        learning_starts=16,
        buffer_size=100,
        seed=0,
    )
    head = {k: v.detach().clone() for k, v in model.actor.mu.state_dict().items()}
    learner = AsyncLearner(model, n_collectors=2, steps_per_chunk=4, sync_every=4, **kwargs)
    try:
        learner.learn(40)
        assert model.num_timesteps == 40 and model.replay_buffer.observations.dtype == np.uint8
        assert model.replay_buffer.observations.shape[-3:] == (3, 56, 84)  # transposed as SB3 does for the learner
        assert learner.version >= 1 and all(n > 0 for n in learner.chunks_per_collector)
        assert any(not np.array_equal(v, model.actor.mu.state_dict()[k]) for k, v in head.items())
    finally:
        learner.close()


def test_async_learner_survives_a_killed_collector():
    fns = counting_fns(4, delay=0.02)
    model = TD3(
        "MlpPolicy",
        DummyVecEnv(fns[:2]),
        learning_starts=32,
        batch_size=16,
        buffer_size=1000,
        seed=0,
        policy_kwargs=dict(net_arch=[32, 32]),
    )
    learner = AsyncLearner(model, n_collectors=2, env_fns=fns, steps_per_chunk=5)
    killed: list[int] = []

    def kill_mid_run() -> None:  # once collector 1 has delivered two chunks, while it runs its third
        while learner.chunks_per_collector[1] < 2:
            time.sleep(0.01)
        killed.append(learner.collector_versions()[1][0])
        os.kill(killed[0], signal.SIGKILL)

    killer = threading.Thread(target=kill_mid_run)
    try:
        killer.start()
        learner.learn(300)
        killer.join()
        assert learner.collector_restarts == 1 and model.num_timesteps == learner.transitions_added >= 300
        buffer = model.replay_buffer
        obs = buffer.observations[: buffer.pos].reshape(-1, 4)
        assert buffer.pos * 2 == model.num_timesteps and len({tuple(o) for o in obs}) == len(obs)  # none twice
        pids = {o[1] for o in obs}
        assert len(pids) == 3 and killed[0] in pids  # two collector processes, then the restarted one
        assert learner.collector_versions()[1][0] not in killed
    finally:
        learner.close()


# -- bridge to collectors outside Ray (buffer directory in, policy directory out) ----------------------------------
def test_bridge_feeds_the_learner_alongside_ray_collectors(tmp_path):
    from _trajectories import ros_jackal_episode, write_pickle

    rng = np.random.default_rng(0)
    buffer_dir = tmp_path / "buffer"
    episodes = [ros_jackal_episode(rng, 6), ros_jackal_episode(rng, 4, success=False)]
    write_pickle(buffer_dir / "actor_7" / "traj_1.pickle", episodes[0])
    model = TD3(
        "MlpPolicy", envs.BarnNavVecEnv(1, max_steps=30), learning_starts=16, batch_size=8, seed=0, buffer_size=500
    )
    bridge = BufferDirectoryBridge(buffer_dir)
    learner = AsyncLearner(model, n_collectors=1, bridge=bridge, poll_interval=0.2, steps_per_chunk=4, max_steps=30)

    def second_file() -> None:  # a Gazebo machine delivers another episode while the Ray collector runs
        while learner.chunks_per_collector[0] < 2:
            time.sleep(0.01)
        write_pickle(buffer_dir / "actor_7" / "traj_2.pickle", episodes[1])

    writer = threading.Thread(target=second_file)
    try:
        writer.start()
        learner.learn(80)
        writer.join()
        deadline = time.monotonic() + 10  # the second file may land after the last chunk: one more poll then
        while bridge.episodes < 2 and time.monotonic() < deadline:
            bridge.poll(model)
            time.sleep(0.1)
    finally:
        learner.close()
    assert bridge.episodes == 2 and bridge.transitions == 10 and not list(buffer_dir.rglob("*.pickle"))  # consumed
    assert model.num_timesteps == learner.transitions_added + bridge.transitions
    stored = model.replay_buffer.observations[: model.replay_buffer.pos, 0]
    for record in episodes[0] + episodes[1]:  # every file transition is in the buffer exactly once
        assert np.sum(np.all(stored == np.asarray(record[0], np.float32).reshape(-1), axis=1)) == 1


def test_bridge_alone_trains_vlm_td3_and_publishes_versioned_policies(tmp_path):
    from _laser_env import image_env
    from _trajectories import ftrl_episode, write_ftrl_trajectory

    from sb3_vlm import VLMTD3

    rng = np.random.default_rng(1)
    for n in (1, 2):
        records, frames = ftrl_episode(rng, 6)
        write_ftrl_trajectory(tmp_path / "buffer" / "actor_0", n, records, frames, first_frame=10 * n)
    model = VLMTD3(
        "VLMPolicy",
        image_env(),
        policy_kwargs={"backbone": "tiny", "freeze_vlm": True},
        batch_size=4,
        learning_starts=4,
        buffer_size=50,
        seed=0,
    )
    bridge = BufferDirectoryBridge(tmp_path / "buffer", publish_dir=tmp_path / "policy")
    learner = AsyncLearner(model, n_collectors=0, bridge=bridge, poll_interval=0.1, sync_every=4)
    learner.learn(12)
    assert model.num_timesteps == bridge.transitions == 12 and learner.version >= 1
    assert bridge.published_versions == list(range(1, learner.version + 1))
    assert (tmp_path / "policy" / "sb3_vlm_config.json").is_file()
    with pytest.raises(ValueError, match="n_collectors must be a positive int"):
        AsyncLearner(model, n_collectors=0)


def test_cli_train_with_ray_collectors(tmp_path):
    import json

    from sb3_vlm.cli import main

    base = ["train", "--policy", "applr", "--timesteps", "64", "--n-envs", "2", "--log-dir", str(tmp_path)]
    assert main([*base, "--ray-address", "auto", "--collectors", "2", "--no-progress-bar"]) == 0
    (run,) = tmp_path.glob("BarnNav-v0__*__ray")
    assert (run / "model.zip").stat().st_size > 0
    assert json.loads((run / "run_config.json").read_text())["ray"]["collectors"] == 2
    assert main([*base, "--ray-address", "auto", "--eval-freq", "10"]) == 2  # not in this mode: an input error
