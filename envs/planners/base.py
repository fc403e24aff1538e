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


class PeriodicPlanner(LocalPlanner):
    """A local planner that optimises every ``period`` control ticks and holds its command in between (the
    optimisers run at 10 Hz inside move_base's 20 Hz loop), with per-slot state grown on demand.

    Subclasses implement :meth:`plan` (commands of the robots due) and may keep per-slot arrays (e.g. warm starts)
    listed in ``slot_state`` (attribute name -> trailing shape), reset to NaN with the slot.

    :param period: Control ticks between optimisations.
    """

    slot_state: dict[str, tuple[int, ...]] = {}

    def __init__(self, period: int = 2) -> None:
        if period < 1:
            raise ValueError(f"{type(self).__name__}: period must be >= 1 control tick, got {period}")
        self.period = period
        self._tick = np.zeros(0, dtype=np.int64)
        self._command = np.zeros((0, 2), dtype=np.float32)
        for name, shape in self.slot_state.items():
            setattr(self, name, np.full((0, *shape), np.nan, dtype=np.float32))

    @abstractmethod
    def plan(self, state: PlannerInput) -> np.ndarray:
        """Commands ``[N, 2]`` (v m/s, w rad/s; NaN rows: no valid command) of the robots of ``state``."""

    def compute_velocity(self, state: PlannerInput) -> np.ndarray:
        self._grow(len(state.known_dist))
        slot = state.env
        due = (self._tick[slot] % self.period == 0) | np.isnan(self._command[slot, 0])
        if due.any():
            rows = np.flatnonzero(due)
            self._command[slot[rows]] = self.plan(state.rows(rows) if len(rows) < len(slot) else state)
        self._tick[slot] += 1
        return self._command[slot].copy()

    def reset(self, i: int) -> None:
        """Forget slot ``i``'s command, tick count and warm start."""
        if i < len(self._tick):
            self._tick[i] = 0
            self._command[i] = np.nan
            for name in self.slot_state:
                getattr(self, name)[i] = np.nan

    def _grow(self, n: int) -> None:
        old = len(self._tick)
        if n <= old:
            return
        self._tick = np.concatenate([self._tick, np.zeros(n - old, dtype=np.int64)])
        self._command = np.concatenate([self._command, np.full((n - old, 2), np.nan, dtype=np.float32)])
        for name, shape in self.slot_state.items():
            grown = np.full((n, *shape), np.nan, dtype=np.float32)
            grown[:old] = getattr(self, name)
            setattr(self, name, grown)
