"""Vectorised MPPI local planner (model-predictive path integral control) driven by FTRL's 8 MPPI parameters
(docs/guide/simulator.md "How each planner works")."""

from __future__ import annotations

import numpy as np
from numba import njit

from envs import robot
from envs.planners.base import PeriodicPlanner, PlannerInput
from envs.planners.kernels import (
    PADDED_CIRCLES,
    body_clearance,
    centre_cost,
    path_arclength,
    point_at,
    project,
    unicycle,
)
from envs.planners.params import MPPI_PARAMS

STEP = 0.1
"""Duration (s) of one step of the sampled control sequences."""
STRIDE = 2
"""Rollouts are checked and costed every ``STRIDE`` steps (0.2 s: 10 cm at the default speed) and at their end."""
COLLIDE = 1e4
"""Cost of a rollout whose padded footprint touches a known obstacle."""
WEIGHTS = (20.0, 10.0, 5.0, 10.0)
"""Weights of the costmap cost (per s), of the distance from the plan (per m s), of the misalignment with the plan
(per s) and of the end point's distance from the horizon's goal (per m)."""
EXPLORATION = 0.3
"""Share of the samples drawn uniformly over the velocity window instead of around the mean."""
_POOL = 1024
"""Noise sequences in the table (>= the most samples, 800)."""
_MAX_STEPS = int(MPPI_PARAMS.high[MPPI_PARAMS.index("nr_steps_")])


@njit(cache=True, nogil=True)
def _rollout(known_dist, known_id, cylinders, s, x, y, th, seq, steps, path, tangent, goal, inflation, check_only):
    """Cost of the control sequence ``seq [steps, 2]`` from ``(x, y, th)`` (``COLLIDE`` or more if it touches),
    its costs taken every ``STRIDE`` steps; ``tangent [KP, 2]``: unit direction of the plan at each point, ``goal``:
    the horizon's goal ``(x, y)``."""
    cost, j, last = 0.0, 0, path.shape[0] - 1
    for t in range(steps):
        x, y, th = unicycle(x, y, th, seq[t, 0], seq[t, 1], STEP)
        if (t + 1) % STRIDE != 0 and t != steps - 1:
            continue
        if body_clearance(known_dist, known_id, cylinders, s, x, y, th, PADDED_CIRCLES)[0] < 0.0:
            cost += COLLIDE
            if check_only:
                return cost
        cost += WEIGHTS[0] * STRIDE * STEP * centre_cost(known_dist, s, x, y, inflation)
        # Nearest plan point: the rollout moves along the plan, so the search only moves forward.
        d = np.hypot(path[j, 0] - x, path[j, 1] - y)
        while j < last:
            nxt = np.hypot(path[j + 1, 0] - x, path[j + 1, 1] - y)
            if nxt > d:
                break
            j, d = j + 1, nxt
        misalign = 1.0 - np.cos(th) * tangent[j, 0] - np.sin(th) * tangent[j, 1]
        cost += STRIDE * STEP * (WEIGHTS[1] * d + WEIGHTS[2] * misalign)
    return cost + WEIGHTS[3] * np.hypot(goal[0] - x, goal[1] - y)


@njit(cache=True, nogil=True)
def mppi_plan(known_dist, known_id, cylinders, env, pose, velocity, params, path, mean, noise, uniform, offset):
    """Commands ``[N, 2]`` (NaN rows: no valid command); updates the warm-start ``mean [N, MAX_STEPS, 2]`` in place.

    Per robot ``[N, ...]``: world slot ``env``, ``pose`` (m, rad), measured ``velocity`` (m/s, rad/s), MPPI
    ``params`` (physical), local ``path [N, KP, 2]`` (m), noise-table ``offset``. ``noise``:
    standard normal table ``[POOL, MAX_STEPS, 2]``; ``uniform``: table ``[POOL, 2]`` in [0, 1).
    """
    n = pose.shape[0]
    out = np.full((n, 2), np.nan, dtype=np.float32)
    dv, dw = robot.ACC_LINEAR * STEP, robot.ACC_ANGULAR * STEP
    for r in range(n):
        s = env[r]
        max_v, max_w, k_samples, steps = params[r, 0], params[r, 1], int(params[r, 2]), int(params[r, 3])
        sig_v, sig_w, lam, inflation = params[r, 4], params[r, 5], params[r, 6], params[r, 7]
        v_lo, v_hi = min(0.0, max_v), max(0.0, max_v)
        arc = path_arclength(path[r])
        tangent = np.zeros((path.shape[1], 2))
        for k in range(path.shape[1] - 1):
            seg = arc[k + 1] - arc[k]
            if seg > 1e-9:
                tangent[k] = (path[r, k + 1] - path[r, k]) / seg
            elif k > 0:
                tangent[k] = tangent[k - 1]
        tangent[-1] = tangent[-2]
        goal = np.empty(2)
        reach = project(path[r], arc, pose[r, 0], pose[r, 1]) + max(abs(max_v), 0.2) * steps * STEP
        goal[0], goal[1], _ = point_at(path[r], arc, reach)
        seqs = np.empty((k_samples + 1, steps, 2))
        costs = np.empty(k_samples + 1)
        for k in range(k_samples + 1):
            v, w = velocity[r, 0], velocity[r, 1]
            row = (offset[r] + k) % noise.shape[0]
            explore = k % 10 < 10 * EXPLORATION and k > 0
            for t in range(steps):
                # Sample 0 is the mean itself; the others perturb it or explore.
                if explore:
                    tv, tw = v_lo + (v_hi - v_lo) * uniform[row, 0], max_w * (2.0 * uniform[row, 1] - 1.0)
                elif k == 0:
                    tv, tw = mean[r, t, 0], mean[r, t, 1]
                else:
                    tv, tw = mean[r, t, 0] + noise[row, t, 0] * sig_v, mean[r, t, 1] + noise[row, t, 1] * sig_w
                v = min(max(tv, v - dv, v_lo), v + dv, v_hi)
                w = min(max(tw, w - dw, -max_w), w + dw, max_w)
                seqs[k, t, 0], seqs[k, t, 1] = v, w
            costs[k] = _rollout(
                known_dist, known_id, cylinders, s, pose[r, 0], pose[r, 1], pose[r, 2], seqs[k], steps, path[r],
                tangent, goal, inflation, False,
            )  # fmt: skip
        best = np.argmin(costs)
        if costs[best] >= COLLIDE:
            mean[r] = 0.0
            continue
        weights = np.exp(-(costs - costs[best]) / lam)
        new = np.zeros((steps, 2))
        for k in range(k_samples + 1):
            new += weights[k] * seqs[k]
        new /= weights.sum()
        x, y, th = pose[r, 0], pose[r, 1], pose[r, 2]
        if (
            _rollout(known_dist, known_id, cylinders, s, x, y, th, new, steps, path[r], tangent, goal, inflation, True)
            >= COLLIDE
        ):
            new[:] = seqs[best]
        out[r, 0], out[r, 1] = new[0, 0], new[0, 1]
        mean[r, : steps - 1] = new[1:]
        mean[r, steps - 1 :] = new[steps - 1]
    return out


class MPPIPlanner(PeriodicPlanner):
    """MPPI driven by FTRL's 8 parameters (``MPPI_PARAMS`` order: ``max_vel_x, max_vel_theta, nr_pairs_, nr_steps_,
    linear_stddev, angular_stddev, lambda, inflation_radius``); see the module docstring.

    :param period: Control ticks between optimisations (2: 10 Hz).
    :param seed: Seed of the fixed noise table.
    """

    params = MPPI_PARAMS
    slot_state = {"_mean": (_MAX_STEPS, 2)}

    def __init__(self, period: int = 2, seed: int = 0) -> None:
        super().__init__(period)
        rng = np.random.default_rng(seed)
        self._noise = rng.standard_normal((_POOL, _MAX_STEPS, 2)).astype(np.float32)
        self._uniform = rng.random((_POOL, 2)).astype(np.float32)

    def plan(self, state: PlannerInput) -> np.ndarray:
        slot = state.env
        fresh = np.isnan(self._mean[slot, 0, 0])
        # A new episode starts from "keep the current velocity".
        self._mean[slot[fresh]] = state.velocity[fresh, None, :]
        mean = self._mean[slot].astype(np.float64)
        # Each optimisation reads the table at a new offset: robot-local (tick count), so batch-independent.
        offset = (self._tick[slot] * 397) % _POOL
        cmd = mppi_plan(
            state.known_dist, state.known_id, state.cylinders, slot, state.pose.astype(np.float64),
            state.velocity.astype(np.float64), state.params.astype(np.float64), state.local_path.astype(np.float64),
            mean, self._noise, self._uniform, offset,
        )  # fmt: skip
        self._mean[slot] = mean
        return cmd
