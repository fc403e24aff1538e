"""Batched navigation simulator: N robots, each in its own world, stepped together with numpy.

One ``step`` = ``time_step`` s of simulated time: the local planner runs at 20 Hz with the given parameters, the
base tracks its commands under acceleration limits, the body is checked for collision at every tick, the laser
marks the obstacles it sees (4 Hz) into each robot's known map, and the global plan is recomputed when the known map
makes it stale. Gymnasium environments and the SB3 ``VecEnv`` are thin layers over this class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs import lidar, robot
from envs.maps import KNOWN_CAP, KNOWN_SHAPE, TRUE_SHAPE, WorldMaps, world_maps
from envs.planners.base import LocalPlanner, PlannerInput
from envs.planners.costmap import INSCRIBED_RADIUS
from envs.planners.dwa import DWAPlanner
from envs.planners.global_planner import extract_path, navigation_function
from envs.worlds import CYLINDER_RADIUS, GOAL_XY, START_POSE, SUCCESS_RADIUS, World

MAX_PATH = 1024
"""Plan points kept per robot (0.1 m cells: 100 m of path)."""
LOCAL_PATH_POINTS = 32
"""Plan points ahead of the robot handed to the local planner (~3-4 m)."""
LOCAL_WINDOW = 5.0
"""Half size of move_base's rolling local costmap (10 x 10 m): the local goal is the last plan point inside it."""
OBSTACLE_RANGE = 2.5
"""Laser returns farther than this do not mark the costmap (costmap_2d ``obstacle_range``)."""
SCAN_EVERY = 10
"""Control ticks between laser scans (0.5 s): obstacles are marked at 2 Hz (the rollouts see 2.5 m ahead)."""

RUNNING, SUCCESS, COLLISION = 0, 1, 2


@dataclass
class StepOutcome:
    """What happened to each robot during one step (arrays ``[N]``).

    :param status: RUNNING, SUCCESS or COLLISION at the end of the step.
    :param progress: Decrease of the Euclidean distance to the goal over the step (m).
    """

    status: np.ndarray
    progress: np.ndarray


class BatchSim:
    """N robots in N worlds.

    :param n: Number of robots.
    :param time_step: Simulated seconds per ``step`` (a multiple of the 0.05 s control period).
    :param planner: Local planner (default: ``DWAPlanner()``).
    """

    def __init__(self, n: int, time_step: float = 0.5, planner: LocalPlanner | None = None) -> None:
        ticks = time_step / robot.CONTROL_DT
        if n < 1:
            raise ValueError(f"BatchSim needs at least one robot, got n={n}")
        if time_step <= 0 or abs(ticks - round(ticks)) > 1e-6:
            raise ValueError(f"time_step must be a positive multiple of {robot.CONTROL_DT} s, got {time_step}")
        self.n, self.time_step, self.ticks = n, time_step, int(round(ticks))
        self.planner = planner or DWAPlanner()
        self.pose = np.zeros((n, 3), dtype=np.float32)
        self.velocity = np.zeros((n, 2), dtype=np.float32)
        self.goal = np.tile(np.array(GOAL_XY, dtype=np.float32), (n, 1))
        self.time = np.zeros(n, dtype=np.float32)
        self.status = np.zeros(n, dtype=np.int64)
        self.dist = np.zeros((n, *TRUE_SHAPE), dtype=np.float32)
        self.owner = np.zeros((n, *TRUE_SHAPE), dtype=np.int32)
        self.cylinders = np.zeros((n, 1, 2), dtype=np.float32)
        self.known_dist = np.full((n, *KNOWN_SHAPE), KNOWN_CAP, dtype=np.float32)
        self.known = [np.zeros(0, dtype=bool) for _ in range(n)]
        self.maps: list[WorldMaps | None] = [None] * n
        self.worlds: list[World | None] = [None] * n
        self.path = np.zeros((n, MAX_PATH, 2), dtype=np.float32)
        self.path_len = np.ones(n, dtype=np.int64)
        self.path_start = np.zeros(n, dtype=np.int64)
        self.planned_inflation = np.zeros(n, dtype=np.float32)
        self.stale = np.ones(n, dtype=bool)
        self.params = np.tile(self.planner.params.default, (n, 1))
        self.ranges = np.full((n, lidar.N_BEAMS), np.inf, dtype=np.float32)

    # ----------------------------------------------------------------------------------------------------------
    def reset(self, i: int, world: World) -> None:
        """Put robot ``i`` at the BARN start of ``world`` with an empty known map and default parameters."""
        maps = world_maps(world)
        k = len(maps.cylinders)
        if k > self.cylinders.shape[1]:
            grown = np.zeros((self.n, k, 2), dtype=np.float32)
            grown[:, : self.cylinders.shape[1]] = self.cylinders
            self.cylinders = grown
        self.cylinders[i, :k] = maps.cylinders
        self.cylinders[i, k:] = 1e3  # padding: far away
        self.dist[i], self.owner[i] = maps.dist, maps.owner
        self.maps[i], self.worlds[i] = maps, world
        self.known[i] = np.zeros(k, dtype=bool)
        self.known_dist[i] = KNOWN_CAP
        self.pose[i] = START_POSE
        self.velocity[i] = 0.0
        self.time[i] = 0.0
        self.status[i] = RUNNING
        self.params[i] = self.planner.params.default
        self.stale[i] = True
        self._scan(np.array([i]))
        self._replan(np.array([i]))

    def step(self, params: np.ndarray) -> StepOutcome:
        """Advance every running robot by ``time_step`` with planner parameters ``[N, P]`` (physical, validated)."""
        self.params[:] = params
        goal_before = np.hypot(*(self.goal - self.pose[:, :2]).T)
        running = self.status == RUNNING
        for tick in range(1, self.ticks + 1):
            idx = np.flatnonzero(running)
            if idx.size == 0:
                break
            cmd = self.planner.compute_velocity(self._planner_input(idx))
            self.velocity[idx] = robot.track_velocity(self.velocity[idx], cmd)
            self.pose[idx] = robot.integrate(self.pose[idx], self.velocity[idx])
            self.time[idx] += robot.CONTROL_DT
            hit = robot.in_collision(self.pose[idx], idx, self.owner, self.cylinders)
            reached = np.hypot(*(self.goal[idx] - self.pose[idx, :2]).T) <= SUCCESS_RADIUS
            self.status[idx[hit]] = COLLISION
            self.status[idx[reached & ~hit]] = SUCCESS
            running = self.status == RUNNING
            if tick % SCAN_EVERY == 0 or tick == self.ticks:
                self._scan(np.flatnonzero(running))
        self.velocity[self.status != RUNNING] = 0.0
        self._scan(np.flatnonzero(self.status != RUNNING))
        self._replan(np.flatnonzero(self.status == RUNNING))
        goal_after = np.hypot(*(self.goal - self.pose[:, :2]).T)
        return StepOutcome(self.status.copy(), goal_before - goal_after)

    # ----------------------------------------------------------------------------------------------------------
    def _scan(self, idx: np.ndarray) -> None:
        """Laser scan of robots ``idx``; mark newly seen cylinders into their known maps."""
        if idx.size == 0:
            return
        ranges, hit = lidar.scan(self.pose[idx], idx, self.dist, self.owner, self.cylinders)
        self.ranges[idx] = ranges
        for row, i in enumerate(idx):
            seen = np.unique(hit[row][ranges[row] <= OBSTACLE_RANGE])
            new = seen[~self.known[i][seen]]
            if new.size:
                self.known[i][new] = True
                maps = self.maps[i]
                np.minimum.at(self.known_dist[i].reshape(-1), maps.stamp_index[new].ravel(), maps.stamp_dist[new].ravel())
                self.stale[i] |= self._near_plan(i, maps.cylinders[new])

    def _near_plan(self, i: int, centres: np.ndarray) -> bool:
        """Whether any cylinder centre ``[k, 2]`` lies within the inflated reach of robot ``i``'s plan ahead."""
        ahead = self.path[i, self.path_start[i] : min(self.path_start[i] + 40, self.path_len[i])]
        reach = max(float(self.params[i, 6]), INSCRIBED_RADIUS) + CYLINDER_RADIUS + 0.05
        d2 = ((ahead[None, :, :] - centres[:, None, :]) ** 2).sum(axis=2)
        return bool(d2.min() < reach**2)

    def _closest(self, idx: np.ndarray) -> np.ndarray:
        """Index of the plan point closest to each robot, never behind the last one found."""
        d2 = ((self.path[idx] - self.pose[idx, None, :2]) ** 2).sum(axis=2)
        ar = np.arange(MAX_PATH)[None, :]
        d2[(ar < self.path_start[idx, None]) | (ar >= self.path_len[idx, None])] = np.inf
        closest = np.argmin(d2, axis=1)
        self.path_start[idx] = closest
        return closest

    def local_goal(self, idx: np.ndarray) -> np.ndarray:
        """move_base's local goal of robots ``idx``: the last plan point before the plan first leaves the rolling
        local-costmap window, ``[len(idx), 2]`` (m)."""
        closest = self._closest(idx)
        last = self.path_len[idx] - 1
        ar = np.arange(MAX_PATH)[None, :]
        outside = np.any(np.abs(self.path[idx] - self.pose[idx, None, :2]) > LOCAL_WINDOW, axis=2)
        outside &= (ar >= closest[:, None]) & (ar <= last[:, None])
        first_out = np.where(outside.any(axis=1), outside.argmax(axis=1), last + 1)
        return self.path[idx, np.maximum(first_out - 1, closest)]

    def _planner_input(self, idx: np.ndarray) -> PlannerInput:
        local_goal = self.local_goal(idx)
        closest, last = self.path_start[idx], self.path_len[idx] - 1
        take = np.minimum(closest[:, None] + np.arange(LOCAL_PATH_POINTS)[None, :], last[:, None])
        local_path = self.path[idx[:, None], take]
        return PlannerInput(
            self.pose[idx], self.velocity[idx], self.params[idx], idx, self.known_dist, local_path, local_goal
        )

    def _replan(self, idx: np.ndarray) -> None:
        """Recompute the plan of robots in ``idx`` whose plan is stale.

        Stale: no plan yet, a newly seen obstacle within the inflated reach of the next ~4 m of the plan, the
        inflation radius moved by > 5 cm, or the robot is > 1 m off the plan.
        """
        if idx.size == 0:
            return
        closest = self._closest(idx)
        off_path = np.hypot(*(self.path[idx, closest] - self.pose[idx, :2]).T) > 1.0
        moved = np.abs(self.params[idx, 6] - self.planned_inflation[idx]) > 0.05
        for i in idx[self.stale[idx] | off_path | moved]:
            pred = navigation_function(self.known_dist[i], float(self.params[i, 6]), self.goal[i])
            path = extract_path(pred, self.pose[i, :2], self.goal[i])
            if path is None:  # NavFn fails: aim straight at the goal and let the local planner try
                path = np.stack([self.pose[i, :2], self.goal[i]])
            path = path[:MAX_PATH]
            self.path[i, : len(path)] = path
            self.path[i, len(path) :] = path[-1]
            self.path_len[i] = len(path)
            self.path_start[i] = 0
            self.planned_inflation[i] = self.params[i, 6]
            self.stale[i] = False

    def global_path(self, i: int) -> np.ndarray:
        """Current plan of robot ``i`` from its closest point on ``[n, 2]`` (m)."""
        return self.path[i, self.path_start[i] : self.path_len[i]].copy()
