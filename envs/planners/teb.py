"""Vectorised TEB local planner (timed elastic band) driven by FTRL's 7 TEB parameters.

The band: poses ``P_0 .. P_n`` (``P_0`` the robot, ``P_n`` the plan point ``LOOKAHEAD`` m ahead, both fixed) and
time intervals ``dT_0 .. dT_{n-1}``, initialised along the local plan with ``n`` such that segments take about
``dt_ref`` s at ``max_vel_x`` (at most ``MAX_SEGMENTS``). Each optimisation runs ``ITERATIONS`` Levenberg-Marquardt
iterations (Jacobian by finite differences) on teb_local_planner's soft terms with its default weights:

- non-holonomic kinematics (``weight_kinematics_nh`` 1000) and forward drive (``weight_kinematics_forward_drive``);
- speed above ``max_vel_x`` forwards, ``max_vel_x_backwards`` backwards (``weight_max_vel_x`` 2), turn rate above
  ``max_vel_theta`` (``weight_max_vel_theta``), acceleration above the base's (``weight_acc_lim_x``);
- time optimality, ``dT`` (``weight_optimaltime``);
- obstacles: hull clearance (from the costmap's marks) below ``min_obstacle_dist`` (``weight_obstacle`` 50) and
  below ``inflation_dist`` (``weight_inflation`` 0.1: active only when it exceeds ``min_obstacle_dist``).

The command is the first segment's velocity and turn rate (clipped to the limits). As teb_local_planner's
feasibility check, the first two segments, interpolated, must keep the hull off every known obstacle; otherwise
there is no valid command (move_base stops and recovers). ``inflation_radius`` is the costmap's (global plan).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from envs import robot
from envs.planners.base import PeriodicPlanner, PlannerInput
from envs.planners.kernels import HULL_CIRCLES, body_clearance, path_arclength, point_at, project, wrap
from envs.planners.params import TEB_PARAMS

LOOKAHEAD = 3.0
"""teb ``max_global_plan_lookahead_dist`` (m): the band ends at the plan point this far ahead."""
MAX_SEGMENTS = 10
"""Most band segments (teb resizes the band to ``dt_ref``; a cap keeps the optimisation small)."""
ITERATIONS = 3
"""Levenberg-Marquardt iterations per optimisation."""
WEIGHTS = np.sqrt(np.array([1000.0, 2.0, 1.0, 1.0, 1.0, 1.0, 50.0, 0.1]))
"""Square roots of teb's weights: nh kinematics, max_vel_x, max_vel_theta, optimal time, forward drive,
acceleration, obstacle, inflation."""
_CHECK_SPACING = 0.1
"""Spacing (m, rad / 4) of the interpolated poses of the feasibility check."""


@njit(cache=True, nogil=True)
def _residuals(z, n, start, end, v0, lim, known_dist, known_id, cylinders, s, out):
    """teb's weighted errors of band ``z`` (free poses ``3 (n - 1)`` then ``n`` time intervals) into ``out``."""
    max_v, max_back, max_w, min_obst, infl = lim[0], lim[1], lim[2], lim[3], lim[4]
    k = 0
    v_prev, dt_prev = v0, -1.0
    for i in range(n):
        xa, ya, ta = (start[0], start[1], start[2]) if i == 0 else (z[3 * i - 3], z[3 * i - 2], z[3 * i - 1])
        xb, yb, tb = (end[0], end[1], end[2]) if i == n - 1 else (z[3 * i], z[3 * i + 1], z[3 * i + 2])
        dt = max(z[3 * (n - 1) + i], 1e-3)
        dx, dy = xb - xa, yb - ya
        ca, sa, cb, sb = np.cos(ta), np.sin(ta), np.cos(tb), np.sin(tb)
        ahead = dx * ca + dy * sa
        v = ahead / dt
        out[k] = WEIGHTS[0] * ((ca + cb) * dy - (sa + sb) * dx)
        out[k + 1] = WEIGHTS[1] * (max(v - max_v, 0.0) if v >= 0 else max(-v - max_back, 0.0))
        out[k + 2] = WEIGHTS[2] * max(abs(wrap(tb - ta)) / dt - max_w, 0.0)
        out[k + 3] = WEIGHTS[3] * dt
        out[k + 4] = WEIGHTS[4] * max(-ahead, 0.0)
        mean_dt = 0.5 * (dt + (dt if dt_prev < 0 else dt_prev))
        out[k + 5] = WEIGHTS[5] * max(abs(v - v_prev) / mean_dt - robot.ACC_LINEAR, 0.0)
        v_prev, dt_prev = v, dt
        k += 6
        if i < n - 1:
            d = body_clearance(known_dist, known_id, cylinders, s, xb, yb, tb, HULL_CIRCLES)[0]
            out[k] = WEIGHTS[6] * max(min_obst - d, 0.0)
            out[k + 1] = WEIGHTS[7] * max(infl - d, 0.0)
            k += 2


@njit(cache=True, nogil=True)
def _feasible(known_dist, known_id, cylinders, s, start, z, n) -> bool:
    """Whether the first two band segments, interpolated, keep the hull off the known obstacles."""
    xa, ya, ta = start[0], start[1], start[2]
    for i in range(min(2, n - 1)):
        xb, yb, tb = z[3 * i], z[3 * i + 1], z[3 * i + 2]
        steps = int(max(np.hypot(xb - xa, yb - ya), 0.25 * abs(wrap(tb - ta))) / _CHECK_SPACING) + 1
        for j in range(1, steps + 1):
            f = j / steps
            th = ta + f * wrap(tb - ta)
            xf, yf = xa + f * (xb - xa), ya + f * (yb - ya)
            if body_clearance(known_dist, known_id, cylinders, s, xf, yf, th, HULL_CIRCLES)[0] < 0.0:
                return False
        xa, ya, ta = xb, yb, tb
    return True


@njit(cache=True, nogil=True)
def teb_plan(known_dist, known_id, cylinders, env, pose, velocity, params, path):
    """Commands ``[N, 2]`` (NaN rows: the band is infeasible).

    Per robot ``[N, ...]``: world slot ``env``, ``pose`` (m, rad), measured ``velocity`` (m/s, rad/s), TEB
    ``params`` (physical), local ``path [N, KP, 2]`` (m).
    """
    n_rob = pose.shape[0]
    out = np.full((n_rob, 2), np.nan, dtype=np.float32)
    for r in range(n_rob):
        s = env[r]
        max_v, dt_ref = params[r, 0], params[r, 3]
        lim = np.array([max_v, params[r, 1], params[r, 2], params[r, 4], params[r, 5]])
        arc = path_arclength(path[r])
        along = project(path[r], arc, pose[r, 0], pose[r, 1])
        length = max(min(LOOKAHEAD, arc[-1] - along), 1e-2)
        n = min(max(int(np.ceil(length / (max_v * dt_ref))), 2), MAX_SEGMENTS)
        start = pose[r]
        end = np.empty(3)
        end[0], end[1], end[2] = point_at(path[r], arc, along + length)
        m = 4 * n - 3
        z = np.empty(m)
        for i in range(1, n):
            z[3 * i - 3], z[3 * i - 2], z[3 * i - 1] = point_at(path[r], arc, along + length * i / n)
            z[3 * i - 1] = start[2] + wrap(z[3 * i - 1] - start[2])
        end[2] = start[2] + wrap(end[2] - start[2])
        z[3 * (n - 1) :] = max(length / n / max_v, 1e-2)
        n_res = 8 * n - 2
        res, trial_res = np.empty(n_res), np.empty(n_res)
        jac = np.empty((n_res, m))
        _residuals(z, n, start, end, velocity[r, 0], lim, known_dist, known_id, cylinders, s, res)
        cost, damping = res @ res, 1e-2
        for _ in range(ITERATIONS):
            for j in range(m):
                h = 1e-4
                keep = z[j]
                z[j] = keep + h
                _residuals(z, n, start, end, velocity[r, 0], lim, known_dist, known_id, cylinders, s, trial_res)
                jac[:, j] = (trial_res - res) / h
                z[j] = keep
            jtj, jtr = jac.T @ jac, jac.T @ res
            for _attempt in range(4):
                a = jtj.copy()
                for j in range(m):
                    a[j, j] += damping * (1.0 + jtj[j, j])
                trial = z - np.linalg.solve(a, jtr)
                for j in range(3 * (n - 1), m):
                    trial[j] = max(trial[j], 1e-2)
                _residuals(trial, n, start, end, velocity[r, 0], lim, known_dist, known_id, cylinders, s, trial_res)
                trial_cost = trial_res @ trial_res
                if trial_cost < cost:
                    z[:], res[:], cost = trial, trial_res, trial_cost
                    damping *= 0.3
                    break
                damping *= 10.0
        if not _feasible(known_dist, known_id, cylinders, s, start, z, n):
            continue
        x1, y1, t1 = (z[0], z[1], z[2]) if n > 1 else (end[0], end[1], end[2])
        dt = z[3 * (n - 1)]
        v = ((x1 - start[0]) * np.cos(start[2]) + (y1 - start[1]) * np.sin(start[2])) / dt
        out[r, 0] = min(max(v, -lim[1]), max_v)
        out[r, 1] = min(max(wrap(t1 - start[2]) / dt, -lim[2]), lim[2])
    return out


class TEBPlanner(PeriodicPlanner):
    """TEB driven by FTRL's 7 parameters (``TEB_PARAMS`` order: ``max_vel_x, max_vel_x_backwards, max_vel_theta,
    dt_ref, min_obstacle_dist, inflation_dist, inflation_radius``); see the module docstring.

    :param period: Control ticks between optimisations (2: 10 Hz).
    """

    params = TEB_PARAMS

    def plan(self, state: PlannerInput) -> np.ndarray:
        return teb_plan(
            state.known_dist, state.known_id, state.cylinders, state.env, state.pose.astype(np.float64),
            state.velocity.astype(np.float64), state.params.astype(np.float64), state.local_path.astype(np.float64),
        )  # fmt: skip
