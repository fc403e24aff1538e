"""BarnNav: navigation in BARN worlds where the action is the local planner's parameters.

The logic lives in :class:`NavBatch`, which runs N episodes on one batched simulator; :class:`BarnNav` is the
single-episode Gymnasium env (N = 1) and :class:`envs.vec_env.BarnNavVecEnv` the SB3 ``VecEnv`` (N envs), so both
compute observations, rewards and terminations with the same code.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs import lidar, render, robot
from envs.planners import ParamTable, param_table
from envs.rewards import PROXIMITY, REWARD_PRESETS, RewardConfig, RewardTerms
from envs.sim import COLLISION, RUNNING, SUCCESS, BatchSim
from envs.worlds import SPLITS, World, barn_world_ids, check_world_id, get_world, nav_metric, split_of

__all__ = ["REWARD_PRESETS", "BarnNav", "NavBatch", "RewardConfig", "RewardTerms"]

STATUS_NAMES = {RUNNING: "running", SUCCESS: "success", COLLISION: "collision"}
TIMEOUT = "timeout"
VELOCITY_LOW = np.array([-0.5, -3.14], dtype=np.float32)
VELOCITY_HIGH = np.array([2.0, 3.14], dtype=np.float32)
"""Bounds of the ``[v m/s, w rad/s]`` velocity observation (FTRL's next-velocity ranges)."""
_GOAL_SCALE = 5.0
"""The 2023 benchmark feeds the goal in the robot frame as ``xy / 5 - 1``."""
_GOAL_LOW, _GOAL_HIGH = -4.0, 2.0
"""Bounds of that feature: the goal stays within 15 m of the robot in a BARN world."""


def _body_extent(angles: np.ndarray) -> np.ndarray:
    """Distance (m) from the robot centre to its footprint's edge along each beam angle ``[B]``."""
    c, s = np.abs(np.cos(angles)), np.abs(np.sin(angles))
    with np.errstate(divide="ignore"):
        return np.minimum(np.where(c > 0, robot.LENGTH / 2 / c, np.inf), np.where(s > 0, robot.WIDTH / 2 / s, np.inf))


_BODY_EXTENT = _body_extent(lidar.BEAM_ANGLES).astype(np.float32)


def resolve_world_ids(worlds: str | Sequence[int] | None, barn_dir: str | Path | None) -> tuple[int, ...]:
    """World ids of an env: a split name of ``SPLITS`` (``"train"``: BARN's 250 training worlds, the default;
    ``"fit"`` / ``"val"``: those split 200 / 50 for validation; ``"test"``: the 50 test worlds; ``"all"``),
    restricted to the worlds present in ``barn_dir`` when given, or a list of ids.

    :raises ValueError: for an unknown split, an empty set or ids absent from ``barn_dir``.
    """
    available = barn_world_ids(barn_dir) if barn_dir is not None else SPLITS["all"]
    worlds = "train" if worlds is None else worlds
    if isinstance(worlds, str):
        if worlds not in SPLITS:
            raise ValueError(f"worlds must be one of {sorted(SPLITS)} or a list of ids, got {worlds!r}")
        ids = tuple(sorted(set(SPLITS[worlds]) & set(available)))
    else:
        ids = tuple(int(i) for i in worlds)
        for i in ids:
            check_world_id(i)
        missing = sorted(set(ids) - set(available))
        if missing:
            raise ValueError(f"worlds {missing[:10]} are not in {barn_dir} (it holds {len(available)} worlds)")
    if not ids:
        raise ValueError(f"no world to run: worlds={worlds!r}" + (f" ({barn_dir} holds none)" if barn_dir else ""))
    return ids


class NavBatch:
    """N BarnNav episodes on one :class:`BatchSim`: observations, rewards, terminations and infos, batched.

    :param n: Number of episodes run side by side.
    :param barn_dir: Directory of real BARN worlds (``world_N.world`` + ``path_files/``), or None for generated ones.
    :param worlds: World set (see :func:`resolve_world_ids`); resetting into any other world is refused, so an env
        of the ``"test"`` split never runs a training world and the reverse.
    :param planner: Local planner: ``"dwa"`` (default), ``"teb"``, ``"mppi"`` or ``"ddp"`` (any case); its parameter
        table (``envs.planners.PARAMS``) is the action space.
    :param time_step: Simulated seconds per step (0.5: FTRL; 1.0: APPLR).
    :param max_steps: Steps before a timeout (200 x 0.5 s = BARN's 100 s).
    :param reward: A preset name of ``REWARD_PRESETS`` or a :class:`RewardConfig`.
    :param laser_clip: Laser ranges are clipped here (m) in the observation (APPLR: 2).
    :param goal_in_obs: Append the goal in the robot frame (2023 benchmark).
    :param last_action_in_obs: Append the last action, normalised to [-1, 1] (2023 benchmark).
    :param noise: Sensor and actuation noise in the simulator (runs differ by seed, as Gazebo runs do).
    """

    def __init__(
        self,
        n: int,
        barn_dir: str | Path | None = None,
        worlds: str | Sequence[int] | None = "train",
        planner: str = "dwa",
        time_step: float = 0.5,
        max_steps: int = 200,
        reward: str | RewardConfig = "ftrl",
        laser_clip: float = 2.0,
        goal_in_obs: bool = False,
        last_action_in_obs: bool = False,
        noise: bool = True,
    ) -> None:
        table = param_table(planner)
        if isinstance(reward, str):
            if reward not in REWARD_PRESETS:
                raise ValueError(f"reward must be one of {sorted(REWARD_PRESETS)} or a RewardConfig, got {reward!r}")
            reward = REWARD_PRESETS[reward]
        if not isinstance(reward, RewardConfig):
            raise TypeError(f"reward must be a preset name or a RewardConfig, got {type(reward).__name__}")
        if not (isinstance(max_steps, int) and max_steps > 0):
            raise ValueError(f"max_steps must be a positive int, got {max_steps!r}")
        if not laser_clip > 0:
            raise ValueError(f"laser_clip must be > 0, got {laser_clip}")
        self.barn_dir = None if barn_dir is None else Path(barn_dir)
        self.world_ids = resolve_world_ids(worlds, barn_dir)
        self.split = "train" if worlds is None else worlds if isinstance(worlds, str) else None
        self.params: ParamTable = table
        self.planner = table.planner.lower()
        self.sim = BatchSim(n, time_step=time_step, planner=self.planner, noise=noise)
        self.n, self.max_steps, self.reward_config = n, max_steps, reward
        self.laser_clip, self.goal_in_obs, self.last_action_in_obs = float(laser_clip), goal_in_obs, last_action_in_obs
        self.steps = np.zeros(n, dtype=np.int64)
        self.last_action = np.tile(self.params.to_unit(self.params.default), (n, 1))
        self.done = np.ones(n, dtype=bool)
        self.trails: list[list[np.ndarray]] = [[] for _ in range(n)]

        obs_dim = lidar.N_BEAMS + 1 + 2 * goal_in_obs + len(self.params) * last_action_in_obs
        low = np.full(obs_dim, -0.5, dtype=np.float32)
        high = np.full(obs_dim, 0.5, dtype=np.float32)
        k = lidar.N_BEAMS + 1
        if goal_in_obs:
            low[k : k + 2], high[k : k + 2] = _GOAL_LOW, _GOAL_HIGH
            k += 2
        if last_action_in_obs:
            low[k:], high[k:] = -1.0, 1.0
        self.laser_space = spaces.Box(low, high, dtype=np.float32)
        self.action_space = spaces.Box(self.params.low.copy(), self.params.high.copy(), dtype=np.float32)

    # ---------------------------------------------------------------------------------------------------------
    def world(self, world_id: int) -> World:
        """World ``world_id`` of this env's source (generated or ``barn_dir``)."""
        check_world_id(world_id)
        if world_id not in self.world_ids:
            if self.split is None:
                raise ValueError(f"world {world_id} is not among this env's worlds {list(self.world_ids)}")
            if world_id in SPLITS[self.split]:
                raise ValueError(f"world {world_id} is not in {self.barn_dir}")
            raise ValueError(
                f"world {world_id} is in the {split_of(world_id)!r} split, not in this env's {self.split!r} split:"
                " make the env with worlds='all' or a list of ids to run it"
            )
        return get_world(world_id, self.barn_dir)

    def reset(self, i: int, rng: np.random.Generator, world_id: int | None = None) -> None:
        """Start episode ``i`` in ``world_id`` (or a world of the set drawn with ``rng``), noise seeded from ``rng``."""
        if world_id is None:
            world_id = self.world_ids[int(rng.integers(len(self.world_ids)))]
        self.sim.reset(i, self.world(world_id), seed=int(rng.integers(2**63)))
        self.steps[i] = 0
        self.last_action[i] = self.params.to_unit(self.params.default)
        self.done[i] = False
        self.trails[i] = [self.sim.pose[i, :2].copy()]

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """Advance every episode by one step with physical planner parameters ``[N, P]``.

        :return: rewards ``[N]``, terminated ``[N]``, truncated ``[N]``, infos (one dict per episode).
        :raises ValueError: for a wrong shape or a parameter outside its range (naming it).
        """
        actions = np.asarray(actions, dtype=np.float32)
        if actions.shape != (self.n, len(self.params)):
            raise ValueError(f"actions must have shape {(self.n, len(self.params))}, got {actions.shape}")
        params = self.params.validate(actions)
        y_before = self.sim.pose[:, 1].copy()
        outcome = self.sim.step(params)
        self.steps += 1
        self.last_action = self.params.to_unit(params)
        for i in range(self.n):
            self.trails[i].append(self.sim.pose[i, :2].copy())

        status = outcome.status
        timeout = (status == RUNNING) & (self.steps >= self.max_steps)
        terminated = status != RUNNING
        clearance = np.sort(self.sim.ranges - _BODY_EXTENT, axis=1)[:, :10].mean(axis=1)
        success = status == SUCCESS
        metric = np.zeros(self.n)
        for i in np.flatnonzero(success):
            metric[i] = nav_metric(True, self.sim.time[i], self.sim.worlds[i].optimal_time)
        self.last_terms = RewardTerms(
            distance=outcome.progress,
            forward=self.sim.pose[:, 1] - y_before,
            proximity=np.where(clearance < PROXIMITY, (1 - np.maximum(clearance, 0) / PROXIMITY) ** 2, 0.0),
            success=success,
            failure=(status == COLLISION) | timeout,
            nav_metric=metric,
        )
        rewards = self.reward_config.rewards(self.last_terms)
        self.done = terminated | timeout
        infos = [self.info(i, timeout[i]) for i in range(self.n)]
        return rewards, terminated, timeout, infos

    # ---------------------------------------------------------------------------------------------------------
    def laser_obs(self) -> np.ndarray:
        """APPLR observation ``[N, obs_dim]``: scaled clipped ranges, goal angle / 2 pi (+ goal, + last action)."""
        clip = self.laser_clip
        ranges = (np.minimum(self.sim.ranges, clip) - clip / 2) / clip
        pose = self.sim.pose
        local_goal = self.sim.local_goal(np.arange(self.n))
        angle = np.arctan2(local_goal[:, 1] - pose[:, 1], local_goal[:, 0] - pose[:, 0]) - pose[:, 2]
        angle = (angle + np.pi) % (2 * np.pi) - np.pi
        parts = [ranges, angle[:, None] / (2 * np.pi)]
        if self.goal_in_obs:
            d = self.sim.goal - pose[:, :2]
            c, s = np.cos(pose[:, 2]), np.sin(pose[:, 2])
            goal = np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]], axis=1)
            parts.append(np.clip(goal / _GOAL_SCALE - 1, _GOAL_LOW, _GOAL_HIGH))
        if self.last_action_in_obs:
            parts.append(self.last_action)
        return np.concatenate(parts, axis=1).astype(np.float32)

    def costmap_obs(self, size: tuple[int, int]) -> np.ndarray:
        """FTRL robot-frame scene images ``[N, H, W, 3]`` uint8 (laser, global path, robot, axes)."""
        paths = [self.sim.global_path(i) for i in range(self.n)]
        return render.costmap_images(self.sim.ranges, lidar.BEAM_ANGLES, self.sim.pose, paths, size)

    def velocity_obs(self) -> np.ndarray:
        """Measured robot velocities ``[N, 2]`` (v m/s, w rad/s), clipped to the observation bounds."""
        return np.clip(self.sim.velocity, VELOCITY_LOW, VELOCITY_HIGH).astype(np.float32)

    def info(self, i: int, timeout: bool = False) -> dict[str, Any]:
        """Step info of episode ``i``: BARN status, time, world, pose, velocity, parameters; at the end also the
        metric and the driven ``trajectory`` ``[T, 2]`` (m)."""
        world = self.sim.worlds[i]
        assert world is not None, "info() before reset()"
        code = int(self.sim.status[i])
        status = TIMEOUT if timeout else STATUS_NAMES[code]
        time = float(self.sim.time[i])
        ended = status != "running"
        return {
            "success": code == SUCCESS,
            "collision": code == COLLISION,
            "status": status,
            "time": time,
            "world": world.name,
            "world_id": world.world_id,
            "opt_time": world.optimal_time,
            "nav_metric": float(nav_metric(code == SUCCESS, time, world.optimal_time)) if ended else 0.0,
            "pose": self.sim.pose[i].copy(),
            "velocity": self.sim.velocity[i].copy(),
            "params": self.params.from_unit(self.last_action[i]).round(4),
            "steps": int(self.steps[i]),
            **({"trajectory": np.array(self.trails[i], dtype=np.float32)} if ended else {}),
        }

    def render_top_down(self, i: int) -> np.ndarray:
        """Top-down RGB image ``[H, W, 3]`` of episode ``i``: obstacles (seen ones darker), plan, trail, robot."""
        world = self.sim.worlds[i]
        assert world is not None, "render() before reset()"
        plan = self.sim.global_path(i)
        return render.top_down(
            world.cylinders, plan, self.sim.pose[i], np.array(self.trails[i]), known=self.sim.known[i]
        )


class BarnNav(gym.Env):
    """
    ## Description
    A Jackal-like robot crosses a BARN world (a 4.5 m x 4.5 m field of 0.15 m cylinders) from (-2.25, 3) to the goal
    10 m ahead, driven by move_base-style planners: a global planner on the inflated known map and a local planner
    (``planner``: DWA at 20 Hz, or the TEB, MPPI or DDP optimiser at 10 Hz). Each step the agent sets the local
    planner's parameters for the next ``time_step`` seconds (APPLR, FTRL).

    ## Action space
    ``Box(low, high, (P,))`` in physical units, the planner's table ``envs.planners.PARAMS[planner]`` (ints are
    rounded here): DWA (P = 7, APPLR ranges) max_vel_x, max_vel_theta, vx_samples, vtheta_samples,
    path_distance_bias, goal_distance_bias, inflation_radius; TEB (7) max_vel_x, max_vel_x_backwards,
    max_vel_theta, dt_ref, min_obstacle_dist, inflation_dist, inflation_radius; MPPI (8) max_vel_x, max_vel_theta,
    ``nr_pairs_``, ``nr_steps_``, linear_stddev, angular_stddev, lambda, inflation_radius; DDP (6) max_vel_x,
    max_vel_theta, ``nr_pairs_``, distance, robot_radius, inflation_radius (FTRL's env ranges).

    ## Observation space
    APPLR's 721 values: 720 laser ranges (270 deg) clipped at ``laser_clip`` and scaled ``(r - clip/2) / clip``, and
    the local goal's angle / 2 pi; optionally the goal in the robot frame (``xy / 5 - 1``) and the last action in
    [-1, 1] (the 2023 benchmark's 729-d observation).

    ## Rewards
    Presets ``"ftrl"`` (default) and ``"applr"``, or a :class:`RewardConfig`.

    ## Episode end
    Terminated on success (within 1 m of the goal) or collision (the body touches a cylinder); truncated after
    ``max_steps`` steps (``status == "timeout"``). ``info["nav_metric"]`` is BARN's metric at the last step.

    ## Arguments
    ``gymnasium.make("BarnNav-v0", planner="dwa", barn_dir=None, worlds="train", reward="ftrl", time_step=0.5,
    max_steps=200, ...)``: see :class:`NavBatch`. ``reset(options={"world_id": k})`` runs world k of the env's worlds.

    ## Version History
    * v0: initial version (``planner`` selects DWA, TEB, MPPI or DDP).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 2}

    def __init__(self, render_mode: str | None = None, **kwargs: Any) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        self.batch = NavBatch(1, **kwargs)
        self.observation_space = self.batch.laser_space
        self.action_space = self.batch.action_space
        self.metadata = {**self.metadata, "render_fps": 1.0 / self.batch.sim.time_step}

    @property
    def param_names(self) -> tuple[str, ...]:
        """Names of the action's parameters, in order."""
        return self.batch.params.names

    @property
    def default_params(self) -> np.ndarray:
        """Planner defaults in physical units ``[P]`` (APPLR's ``param_init``)."""
        return self.batch.params.default.copy()

    @property
    def world_ids(self) -> tuple[int, ...]:
        """Worlds this env runs (a reset into any other world is refused)."""
        return self.batch.world_ids

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        world_id = (options or {}).get("world_id")
        self.batch.reset(0, self.np_random, world_id)
        return self.batch.laser_obs()[0], self.batch.info(0)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.batch.done[0]:
            raise RuntimeError("BarnNav.step() called on a finished episode: call reset() first")
        action = np.asarray(action, dtype=np.float32)
        if action.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape}, got {action.shape}")
        rewards, terminated, truncated, infos = self.batch.step(action[None])
        return self.batch.laser_obs()[0], float(rewards[0]), bool(terminated[0]), bool(truncated[0]), infos[0]

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        return self.batch.render_top_down(0)
