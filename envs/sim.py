"""Batched navigation simulator: N robots, each in its own world, stepped together with numpy (move_base's 20 Hz
control ticks, command latency, laser-only costmaps, recovery behaviours, skid-steer slip). What is modelled and why:
docs/guide/simulator.md "How move_base is modelled"."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs import lidar, robot
from envs.maps import KNOWN_CAP, KNOWN_SHAPE, WorldMaps, world_maps
from envs.obstacle_layer import ObstacleLayer
from envs.plan_tracking import PlanTracking
from envs.planners.base import LocalPlanner, PlannerInput
from envs.planners.global_planner import extract_path, navigation_function, path_costs
from envs.planners.registry import make_planner
from envs.recovery import CONTROLLER_PATIENCE, PLANNER_PATIENCE, RecoveryBehaviours
from envs.worlds import GOAL_XY, START_POSE, SUCCESS_RADIUS, World

MAX_PATH = 1024
"""Plan points kept per robot (0.15 m cells: > 150 m of path)."""
LOCAL_PATH_POINTS = 32
"""Plan points ahead of the robot handed to the local planner (~5-6 m)."""
PLAN_MARGIN = (3.0, 2.5, 1.5)
"""Plans are first searched in the box around the robot and the goal widened by these (m): sideways, below, above.
BARN plans go up through a 4.5 m wide field, so the box nearly always holds the optimum; else the whole map."""
MARK_ERROR = 0.05
"""Standard deviation (m, per axis) of where the costmap puts a cylinder, drawn per cylinder and episode: the
obstacle layer marks the 5 cm cell holding each laser hit (so the marked surface sits up to a cell off the true one),
in the odom frame, which drifts with the skid-steer's wheel slip. Both planners plan around these marks; collisions
are checked against the true cylinders."""
SCAN_EVERY = 10
"""Control ticks between laser scans (0.5 s). move_base's costmaps update at 10-20 Hz; marking at 2 Hz keeps the
simulator fast, and obstacles still appear >= 1.5 m ahead of a robot at <= 2 m/s (marking starts at 2.5 m)."""
LATENCY_TICKS = 2
"""Control ticks (0.1 s) between computing a command and the base acting on it."""
RANGE_NOISE = 0.01
"""Standard deviation (m) of the laser's Gaussian range noise (Gazebo ray-sensor plugin of the Jackal's laser)."""
SLIP_NOISE = 0.05
"""Velocity-tracking error of the skid-steer base per tick (wheel slip): standard deviation of the linear and the
angular velocity as a fraction of the speed, and of the yaw rate (rad/s) per m/s of linear speed."""
START_JITTER = (0.03, 0.03, 0.03)
"""Standard deviation of the start pose (m, m, rad): Gazebo's reset accepts the robot within 0.1 m of the start."""

RUNNING, SUCCESS, COLLISION = 0, 1, 2
"""Episode status codes."""


@dataclass
class StepOutcome:
    """What happened to each robot during one step (arrays ``[N]``).

    :param status: RUNNING, SUCCESS or COLLISION at the end of the step.
    :param progress: Decrease of the Euclidean distance to the goal over the step (m).
    """

    status: np.ndarray
    progress: np.ndarray


class BatchSim(PlanTracking, RecoveryBehaviours, ObstacleLayer):
    """N robots in N worlds.

    :param n: Number of robots.
    :param time_step: Simulated seconds per ``step`` (a multiple of the 0.05 s control period).
    :param planner: Local planner, or its name (``"dwa"``, ``"teb"``, ``"mppi"``, ``"ddp"``; default ``"dwa"``). Its
        parameter table must name ``inflation_radius`` (the costmap's and global planner's) and ``max_vel_theta``
        (rotate_recovery's top speed).
    :param noise: Laser, actuation and start-pose noise (see the module docstring); ``False`` makes every episode
        a deterministic function of its world and parameters.
    """

    def __init__(self, n: int, time_step: float = 0.5, planner: LocalPlanner | str = "dwa", noise: bool = True) -> None:
        ticks = time_step / robot.CONTROL_DT
        if n < 1:
            raise ValueError(f"BatchSim needs at least one robot, got n={n}")
        if time_step <= 0 or abs(ticks - round(ticks)) > 1e-6:
            raise ValueError(f"time_step must be a positive multiple of {robot.CONTROL_DT} s, got {time_step}")
        self.n, self.time_step, self.ticks, self.noise = n, time_step, int(round(ticks)), noise
        self.planner = make_planner(planner) if isinstance(planner, str) else planner
        self.inflation_col = self.planner.params.index("inflation_radius")
        self.turn_col = self.planner.params.index("max_vel_theta")
        self.pose = np.zeros((n, 3), dtype=np.float32)
        self.velocity = np.zeros((n, 2), dtype=np.float32)  # body (v, w): what odometry and the IMU report
        self.wheels = np.zeros((n, 2), dtype=np.float32)  # (v, w) the wheels track, before the skid-steer's slip
        self.goal = np.tile(np.array(GOAL_XY, dtype=np.float32), (n, 1))
        self.time = np.zeros(n, dtype=np.float32)
        self.status = np.zeros(n, dtype=np.int64)
        self.owner = np.zeros((n, 1, 1), dtype=np.int16)
        self.cylinders = np.zeros((n, 1, 2), dtype=np.float32)
        self.marked = np.zeros((n, 1, 2), dtype=np.float32)  # where the costmap puts each cylinder (see MARK_ERROR)
        self.n_cylinders = np.zeros(n, dtype=np.int64)
        self.seen = np.zeros((n, 1), dtype=bool)
        self.known_dist = np.full((n, *KNOWN_SHAPE), KNOWN_CAP, dtype=np.float32)
        self.known_id = np.full((n, *KNOWN_SHAPE), -1, dtype=np.int16)
        self.maps: list[WorldMaps | None] = [None] * n
        self.worlds: list[World | None] = [None] * n
        self.path = np.zeros((n, MAX_PATH, 2), dtype=np.float32)
        self.path_len = np.ones(n, dtype=np.int64)
        self.path_start = np.zeros(n, dtype=np.int64)
        self.planned_inflation = np.zeros(n, dtype=np.float32)
        self.stale = np.ones(n, dtype=bool)
        self.params = np.tile(self.planner.params.default, (n, 1))
        self.ranges = np.full((n, lidar.N_BEAMS), np.inf, dtype=np.float32)
        # move_base state: commands in flight, plan / control validity, recovery progress.
        self.pending = np.zeros((n, LATENCY_TICKS, 2), dtype=np.float32)
        self.has_plan = np.zeros(n, dtype=bool)
        self.last_valid = np.zeros(n, dtype=np.float32)
        self.recovery = np.zeros(n, dtype=np.int64)
        self.rotate_left = np.zeros(n, dtype=np.float32)
        self.aborted = np.zeros(n, dtype=bool)
        self.rngs: list[np.random.Generator | None] = [None] * n
        # Noise slots for the scans of a step: a robot that stops running takes its final scan in a slot its
        # in-step scans did not use.
        self._scans_per_step = -(-self.ticks // SCAN_EVERY)
        self._velocity_noise = np.zeros((n, self.ticks, 2), dtype=np.float32)
        self._clearance = np.full((n, 3), np.nan, dtype=np.float32)  # nearest seen cylinder (m), from (x, y)
        self._goal_at = np.full(n, -1, dtype=np.int64)  # plan index of the last local goal (-1: search in full)
        self._range_noise = np.zeros((n, self._scans_per_step, lidar.N_BEAMS), dtype=np.float32)

    @property
    def known(self) -> list[np.ndarray]:
        """Per robot, which of its world's cylinders the laser has seen (bool ``[K_i]``, live views)."""
        return [self.seen[i, : self.n_cylinders[i]] for i in range(self.n)]

    # ----------------------------------------------------------------------------------------------------------
    def reset(self, i: int, world: World, seed: int | None = None) -> None:
        """Put robot ``i`` at the BARN start of ``world`` with an empty known map and default parameters.

        :param seed: Seed of robot ``i``'s noise generator: the same seed (and parameters) replays the episode
            exactly, whatever the other robots do. ``None`` draws from a fresh, unseeded ``np.random.default_rng()``.
            Ignored when the simulator was built with ``noise=False``.
        """
        maps = world_maps(world)
        k = len(maps.cylinders)
        if k > self.cylinders.shape[1]:
            grown = np.full((2, self.n, k, 2), 1e3, dtype=np.float32)  # padding: far away
            grown[0, :, : self.cylinders.shape[1]] = self.cylinders
            grown[1, :, : self.marked.shape[1]] = self.marked
            self.cylinders, self.marked = grown
            seen = np.zeros((self.n, k), dtype=bool)
            seen[:, : self.seen.shape[1]] = self.seen
            self.seen = seen
        if self.owner.shape[1:] != maps.owner.shape:
            self.owner = np.zeros((self.n, *maps.owner.shape), dtype=maps.owner.dtype)
        self.cylinders[i, :k] = maps.cylinders
        self.cylinders[i, k:] = 1e3
        self.rngs[i] = np.random.default_rng(seed) if self.noise else None
        self.marked[i] = self.cylinders[i]
        if self.noise:
            self.marked[i, :k] += self.rngs[i].normal(0.0, MARK_ERROR, (k, 2)).astype(np.float32)
        self.owner[i] = maps.owner
        self.n_cylinders[i] = k
        self.seen[i] = False
        self._clearance[i] = np.nan
        self.maps[i], self.worlds[i] = maps, world
        self.known_dist[i] = KNOWN_CAP
        self.known_id[i] = -1
        self.pose[i] = START_POSE
        if self.noise:
            self.pose[i] += self.rngs[i].normal(0.0, START_JITTER).astype(np.float32)
        self.velocity[i] = 0.0
        self.wheels[i] = 0.0
        self.time[i] = 0.0
        self.status[i] = RUNNING
        self.params[i] = self.planner.params.default
        self.planner.reset(i)
        self.stale[i] = True
        self.has_plan[i] = False
        self.path[i] = self.pose[i, :2]  # no plan yet: a single point at the robot
        self.path_len[i] = 1
        self.path_start[i] = 0
        self._goal_at[i] = -1
        self.pending[i] = 0.0
        self.last_valid[i] = 0.0
        self.recovery[i] = 0
        self.rotate_left[i] = 0.0
        self.aborted[i] = False
        self._draw_noise(np.array([i]))
        self._scan(np.array([i]), 0)
        self._replan(np.array([i]))

    def step(self, params: np.ndarray) -> StepOutcome:
        """Advance every running robot by ``time_step`` with planner parameters ``[N, P]`` (physical, validated)."""
        self.params[:] = params
        goal_before = np.hypot(*(self.goal - self.pose[:, :2]).T)
        running = self.status == RUNNING
        started = running.copy()
        self._draw_noise(np.flatnonzero(running))
        scans = 0
        for tick in range(1, self.ticks + 1):
            idx = np.flatnonzero(running)
            if idx.size == 0:
                break
            cmd = self._command(idx)
            applied = self.pending[idx, 0]
            self.pending[idx, :-1] = self.pending[idx, 1:]
            self.pending[idx, -1] = cmd
            vel = robot.track_velocity(self.wheels[idx], applied)
            z = self._velocity_noise[idx, tick - 1]
            slip = np.stack([z[:, 0] * np.abs(vel[:, 0]), z[:, 1] * (np.abs(vel[:, 1]) + np.abs(vel[:, 0]))], axis=1)
            self.wheels[idx] = vel + SLIP_NOISE * slip
            self.velocity[idx], lateral = robot.skid_steer(self.wheels[idx])
            self.pose[idx] = robot.integrate(self.pose[idx], self.velocity[idx], lateral=lateral)
            self.time[idx] += robot.CONTROL_DT
            hit = robot.in_collision(self.pose[idx], idx, self.owner, self.cylinders)
            reached = np.hypot(*(self.goal[idx] - self.pose[idx, :2]).T) <= SUCCESS_RADIUS
            self.status[idx[hit]] = COLLISION
            self.status[idx[reached & ~hit]] = SUCCESS
            running = self.status == RUNNING
            if tick % SCAN_EVERY == 0 or tick == self.ticks:
                self._scan(np.flatnonzero(running), scans)
                scans += 1
        # Robots that stopped during this step: at rest, with a last scan from where they stopped.
        stopped = np.flatnonzero(started & (self.status != RUNNING))
        self.velocity[stopped] = 0.0
        self.wheels[stopped] = 0.0
        self._scan(stopped, scans)
        self._replan(np.flatnonzero(self.status == RUNNING))
        goal_after = np.hypot(*(self.goal - self.pose[:, :2]).T)
        return StepOutcome(self.status.copy(), goal_before - goal_after)

    # ----------------------------------------------------------------------------------------------------------
    def _draw_noise(self, idx: np.ndarray) -> None:
        """This step's noise of robots ``idx``, a fixed amount from each robot's own generator."""
        for i in idx:
            rng = self.rngs[i]
            if rng is None:
                continue
            z = rng.standard_normal(self._velocity_noise[i].size + self._range_noise[i].size, dtype=np.float32)
            cut = self._velocity_noise[i].size
            self._velocity_noise[i] = z[:cut].reshape(self.ticks, 2)
            self._range_noise[i] = z[cut:].reshape(self._scans_per_step, -1) * RANGE_NOISE

    def _command(self, idx: np.ndarray) -> np.ndarray:
        """move_base's command ``[len(idx), 2]`` for running robots ``idx``: planner, recovery or standstill."""
        cmd = np.zeros((idx.size, 2), dtype=np.float32)
        rotating = self.rotate_left[idx] > 0
        control = self.has_plan[idx] & ~rotating & ~self.aborted[idx]
        if control.any():
            c = idx[control]
            out = self.planner.compute_velocity(self._planner_input(c))
            ok = ~np.isnan(out[:, 0])
            cmd[control] = np.where(ok[:, None], out, 0.0)
            self.last_valid[c[ok]] = self.time[c[ok]]
            self.recovery[c[ok]] = 0
        if rotating.any():
            cmd[rotating] = self._rotate(idx[rotating])
        # Patience: no plan for planner_patience, or no valid command for controller_patience.
        waited = self.time[idx] - self.last_valid[idx]
        limit = np.where(self.has_plan[idx], CONTROLLER_PATIENCE, PLANNER_PATIENCE)
        for i in idx[(waited >= limit) & ~rotating & ~self.aborted[idx]]:
            self._recover(i)
        return cmd

    def _planner_input(self, idx: np.ndarray) -> PlannerInput:
        local_goal, final = self._local_goal(idx)
        closest, last = self.path_start[idx], self.path_len[idx] - 1
        take = np.minimum(closest[:, None] + np.arange(LOCAL_PATH_POINTS)[None, :], last[:, None])
        local_path = self.path[idx[:, None], take]
        return PlannerInput(
            self.pose[idx],
            self.velocity[idx],
            self.params[idx],
            idx,
            self.known_dist,
            self.known_id,
            self.marked,
            local_path,
            local_goal,
            final,
            self._nearest_clearance(idx),
        )

    def _replan(self, idx: np.ndarray) -> None:
        """Recompute the plan of robots in ``idx`` whose plan is stale or missing.

        Stale: no plan yet, a newly seen obstacle within the inflated reach of the next ~4 m of the plan, the
        inflation radius moved by > 5 cm, the robot is > 1 m off the plan, or a recovery behaviour ran. A failed
        search keeps the old plan (move_base keeps controlling on it) and is retried next step.
        """
        if idx.size == 0:
            return
        closest = self._closest(idx)
        off_path = np.hypot(*(self.path[idx, closest] - self.pose[idx, :2]).T) > 1.0
        moved = np.abs(self.params[idx, self.inflation_col] - self.planned_inflation[idx]) > 0.05
        for i in idx[self.stale[idx] | off_path | moved | ~self.has_plan[idx]]:
            if self.aborted[i]:
                continue
            path = self._plan(i)
            if path is None:
                self.stale[i] = True
                continue
            path = path[:MAX_PATH]
            self.path[i, : len(path)] = path
            self.path[i, len(path) :] = path[-1]
            self.path_len[i] = len(path)
            self.path_start[i] = 0
            self._goal_at[i] = -1
            self.planned_inflation[i] = self.params[i, self.inflation_col]
            self.stale[i] = False
            if not self.has_plan[i]:
                self.has_plan[i] = True
                self.last_valid[i] = self.time[i]
                self.recovery[i] = 0

    def _plan(self, i: int) -> np.ndarray | None:
        """NavFn-like plan ``[n, 2]`` of robot ``i`` from its pose to its goal, None if there is none.

        Cheap searches first: confined to a box around the robot and the goal (``PLAN_MARGIN``), and, while the old plan
        is still passable, stopped just beyond its cost on the new map (which bounds the new plan's); the whole map
        is searched only if those miss the robot.
        """
        start, goal, infl = self.pose[i, :2], self.goal[i], float(self.params[i, self.inflation_col])
        (x0, y0), (x1, y1) = np.minimum(start, goal), np.maximum(start, goal)
        box = (x0 - PLAN_MARGIN[0], x1 + PLAN_MARGIN[0], y0 - PLAN_MARGIN[1], y1 + PLAN_MARGIN[2])
        limits = [np.inf]
        if self.has_plan[i]:
            old = np.concatenate([start[None], self.path[i, self.path_start[i] : self.path_len[i]]])
            bound = float(path_costs(self.known_dist[i], infl, old).sum())
            if np.isfinite(bound):
                limits.insert(0, 1.05 * bound + 0.5)
        for limit in limits:
            path = extract_path(navigation_function(self.known_dist[i], infl, goal, limit, box), start, goal)
            if path is not None:
                return path
        return extract_path(navigation_function(self.known_dist[i], infl, goal), start, goal)

    def global_path(self, i: int) -> np.ndarray:
        """Current plan of robot ``i`` from its closest point on ``[n, 2]`` (m)."""
        return self.path[i, self.path_start[i] : self.path_len[i]].copy()
