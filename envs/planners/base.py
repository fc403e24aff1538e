"""The local-planner interface: what every planner of the simulator receives and returns, batched over N robots."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, replace

import numpy as np

from envs.planners.params import ParamTable


@dataclass
class PlannerInput:
    """Everything a local planner may use at one control tick.

    :param pose: Robot poses ``[N, 3]`` (x m, y m, heading rad).
    :param velocity: Measured velocities ``[N, 2]`` (v m/s, w rad/s).
    :param params: Planner parameters ``[N, P]`` in physical units (ints already rounded).
    :param env: Slot of each robot in ``known_dist`` ``[N]``.
    :param known_dist: Distance to the nearest known obstacle ``[E, KH, KW]`` (m) of all slots, the costmap's
        source (passed whole: robots index it through ``env``, nothing is copied).
    :param known_id: Index of the nearest known cylinder ``[E, KH, KW]`` (-1 where none is within ``KNOWN_CAP``).
    :param cylinders: Cylinder centres of every slot ``[E, K, 2]`` (m), indexed by ``known_id``.
    :param local_path: Global-plan points ahead of the robot ``[N, KP, 2]`` (m), padded with the last point.
    :param local_goal: Last global-plan point inside the local costmap window ``[N, 2]`` (m).
    :param goal_is_final: Whether the local goal is the final goal (it lies inside the local window) ``[N]``.
    :param clearance: Distance from each robot to the nearest known obstacle surface ``[N]`` (m, uncapped).
    """

    pose: np.ndarray
    velocity: np.ndarray
    params: np.ndarray
    env: np.ndarray
    known_dist: np.ndarray
    known_id: np.ndarray
    cylinders: np.ndarray
    local_path: np.ndarray
    local_goal: np.ndarray
    goal_is_final: np.ndarray
    clearance: np.ndarray

    def rows(self, rows: np.ndarray) -> PlannerInput:
        """The same tick for robots ``rows`` only (the shared grids are not copied)."""
        per_robot = ("pose", "velocity", "params", "env", "local_path", "local_goal", "goal_is_final", "clearance")
        return replace(self, **{name: getattr(self, name)[rows] for name in per_robot})


class LocalPlanner(ABC):
    """A batched local planner driven by a parameter table (the RL action)."""

    params: ParamTable

    @abstractmethod
    def compute_velocity(self, state: PlannerInput) -> np.ndarray:
        """Velocity commands ``[N, 2]`` (v m/s, w rad/s) for one control tick; a NaN row means the planner found
        no valid command (move_base then publishes zero velocity and, after ``controller_patience``, recovers)."""

    def reset(self, i: int) -> None:  # noqa: B027 - optional hook, stateless planners need nothing
        """Forget any per-robot state kept for world slot ``i`` (a new episode starts there)."""
