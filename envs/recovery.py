"""move_base's recovery behaviours (its default list), run when a robot has had no plan for ``planner_patience`` or
no valid command for ``controller_patience``: conservative reset, in-place rotation, aggressive reset, rotation, abort.

A mixin of :class:`envs.sim.BatchSim`: it uses the robots' state arrays (``pose``, ``velocity``, ``params`` with
column ``turn_col`` = ``max_vel_theta``, ``recovery``, ``rotate_left``, ``aborted``, ``stale``, ``last_valid``,
``time``, ``seen``, ``marked``) and the simulator's ``_known_at``, ``_restamp`` and ``_replan``.
"""

from __future__ import annotations

import numpy as np

from envs import robot
from envs.planners.costmap import FOOTPRINT_HALF

RESET_SQUARES = (3.0, 4 * float(np.hypot(*FOOTPRINT_HALF)))
"""Sides (m) of the squares around the robot outside which the conservative and aggressive resets forget obstacles
(``conservative_reset_dist`` 3.0; aggressive: 4 x the circumscribed radius)."""
ROTATE_ACC, ROTATE_MIN_SPEED = 20.0, 0.314
"""rotate_recovery reads the local planner's ``acc_lim_theta`` (rad/s^2) and ``min_in_place_vel_theta`` (rad/s);
it turns at most at ``max_vel_theta`` (the action's value)."""
ROTATE_CLEARANCE = float(np.hypot(*FOOTPRINT_HALF))
"""rotate_recovery stops when its footprint check fails; here: when a known obstacle lies within the circle the
padded footprint sweeps (m)."""
_ROTATIONS = (1, 3)
"""Recovery stages that rotate in place (0 and 2 reset the map); stage 4 aborts."""
PLANNER_PATIENCE = 5.0
"""move_base ``planner_patience`` (s): time without a plan before the recovery behaviours run."""
CONTROLLER_PATIENCE = 15.0
"""move_base ``controller_patience`` (s): time without a valid command before the recovery behaviours run."""


class RecoveryBehaviours:
    """Rotate-recovery commands, the next behaviour of a robot, and forgetting far obstacles."""

    def _rotate(self, idx: np.ndarray) -> np.ndarray:
        """rotate_recovery's command for robots ``idx``: turn left until 2 pi is done or an obstacle is in reach."""
        dtheta = np.abs(self.velocity[idx, 1]) * robot.CONTROL_DT
        self.rotate_left[idx] = np.maximum(self.rotate_left[idx] - dtheta, 0.0)
        blocked = self._known_at(idx, self.pose[idx, :2]) < ROTATE_CLEARANCE
        self.rotate_left[idx[blocked]] = 0.0
        done = idx[self.rotate_left[idx] == 0]
        self.stale[done] = True  # move_base plans again after each recovery behaviour
        self.last_valid[done] = np.minimum(self.last_valid[done], self.time[done] - CONTROLLER_PATIENCE)
        speed = np.clip(
            np.sqrt(2 * ROTATE_ACC * self.rotate_left[idx]), ROTATE_MIN_SPEED, self.params[idx, self.turn_col]
        )
        return np.stack([np.zeros_like(speed), np.where(self.rotate_left[idx] > 0, speed, 0.0)], axis=1)

    def _recover(self, i: int) -> None:
        """Run robot ``i``'s next recovery behaviour (move_base's default list), or abort after the last."""
        stage = self.recovery[i]
        self.recovery[i] += 1
        if stage in _ROTATIONS:
            self.rotate_left[i] = 2 * np.pi
        elif stage < 4:
            self._forget_far(i, RESET_SQUARES[stage // 2] / 2)
            self._replan(np.array([i]))
        else:
            self.aborted[i] = True

    def _forget_far(self, i: int, half: float) -> None:
        """Clear robot ``i``'s known map outside the square of half side ``half`` (m) around it."""
        k = self.n_cylinders[i]
        far = np.any(np.abs(self.marked[i, :k] - self.pose[i, :2]) > half, axis=1)
        self.seen[i, :k] &= ~far
        self._restamp(i)
        self.stale[i] = True
