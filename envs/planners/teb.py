"""Vectorised TEB local planner (timed elastic band, Levenberg-Marquardt on teb_local_planner's soft terms) driven by
FTRL's 7 TEB parameters (docs/guide/simulator.md "How each planner works")."""

from __future__ import annotations

import numpy as np
from numba import njit

from envs import robot
from envs.planners.base import PeriodicPlanner, PlannerInput
from envs.planners.kernels import (
    HULL_CIRCLES,
    PADDED_CIRCLES,
    body_clearance,
    path_arclength,
    point_at,
    project,
    unicycle,
    wrap,
)
from envs.planners.params import TEB_PARAMS

LOOKAHEAD = 3.0
"""teb ``max_global_plan_lookahead_dist`` (m): the band ends at the plan point this far ahead."""
MAX_SEGMENTS = 12
"""Most band segments (teb resizes the band to ``dt_ref``; a cap keeps the optimisation small)."""
ITERATIONS = 6
"""Levenberg-Marquardt iterations per optimisation."""
WEIGHTS = np.sqrt(np.array([1000.0, 2.0, 1.0, 1.0, 1.0, 1.0, 50.0, 0.1]))
"""Square roots of teb's weights: nh kinematics, max_vel_x, max_vel_theta, optimal time, forward drive,
acceleration (linear and angular), obstacle, inflation."""
FEASIBILITY_MARGIN = 0.0
"""Hull clearance (m) the feasibility check demands of the known obstacles."""
COMMAND_CHECK = 0.5
"""Time (s) the command's own arc is checked for: latency and braking at the base's deceleration."""
_CHECK_SPACING = 0.1
"""Spacing (m, rad / 4) of the interpolated poses of the feasibility check."""


_BLOCK = 9
"""Residuals per band segment: 7 motion terms and the 2 obstacle terms of its end pose."""


@njit(cache=True, nogil=True)
def _pose(z, n, start, end, i):
    """Pose ``i`` (0: the robot, ``n``: the band's end) of band ``z``."""
    if i == 0:
        return start[0], start[1], start[2]
    if i == n:
        return end[0], end[1], end[2]
    return z[3 * i - 3], z[3 * i - 2], z[3 * i - 1]


@njit(cache=True, nogil=True)
def _motion(z, n, start, end, i, v0, w0):
    """Speed (m/s, signed along the heading), turn rate (rad/s), the advance (m) and ``dT`` of segment ``i``
    (segment -1: the measured velocity ``v0, w0``)."""
    if i < 0:
        return v0, w0, 0.0, -1.0
    xa, ya, ta = _pose(z, n, start, end, i)
    xb, yb, tb = _pose(z, n, start, end, i + 1)
    dt = max(z[3 * (n - 1) + i], 1e-3)
    ahead = (xb - xa) * np.cos(ta) + (yb - ya) * np.sin(ta)
    return ahead / dt, wrap(tb - ta) / dt, ahead, dt


@njit(cache=True, nogil=True)
def _block(z, n, start, end, i, vel0, lim, known_dist, known_id, cylinders, s, out):
    """teb's weighted errors of band segment ``i`` into ``out [_BLOCK]`` (band ``z``: free poses ``3 (n - 1)``, then
    ``n`` time intervals)."""
    max_v, max_back, max_w, min_obst, infl = lim[0], lim[1], lim[2], lim[3], lim[4]
    xa, ya, ta = _pose(z, n, start, end, i)
    xb, yb, tb = _pose(z, n, start, end, i + 1)
    v, w, ahead, dt = _motion(z, n, start, end, i, vel0[0], vel0[1])
    v_prev, w_prev, _, dt_prev = _motion(z, n, start, end, i - 1, vel0[0], vel0[1])
    dx, dy = xb - xa, yb - ya
    out[0] = WEIGHTS[0] * ((np.cos(ta) + np.cos(tb)) * dy - (np.sin(ta) + np.sin(tb)) * dx)
    out[1] = WEIGHTS[1] * (max(v - max_v, 0.0) if v >= 0 else max(-v - max_back, 0.0))
    out[2] = WEIGHTS[2] * max(abs(w) - max_w, 0.0)
    out[3] = WEIGHTS[3] * dt
    out[4] = WEIGHTS[4] * max(-ahead, 0.0)
    mean_dt = 0.5 * (dt + (dt if dt_prev < 0 else dt_prev))
    out[5] = WEIGHTS[5] * max(abs(v - v_prev) / mean_dt - robot.ACC_LINEAR, 0.0)
    out[6] = WEIGHTS[5] * max(abs(w - w_prev) / mean_dt - robot.ACC_ANGULAR, 0.0)
    if i < n - 1:
        d = body_clearance(known_dist, known_id, cylinders, s, xb, yb, tb, PADDED_CIRCLES)[0]
        out[7] = WEIGHTS[6] * max(min_obst - d, 0.0)
        out[8] = WEIGHTS[7] * max(infl - d, 0.0)
    else:
        out[7] = out[8] = 0.0


@njit(cache=True, nogil=True)
def _residuals(z, n, start, end, vel0, lim, known_dist, known_id, cylinders, s, out):
    """All ``n`` segment blocks of band ``z`` into ``out [n * _BLOCK]``."""
    for i in range(n):
        _block(z, n, start, end, i, vel0, lim, known_dist, known_id, cylinders, s, out[i * _BLOCK : (i + 1) * _BLOCK])


@njit(cache=True, nogil=True)
def _jacobian(z, n, start, end, vel0, lim, known_dist, known_id, cylinders, s, res, jac):
    """Forward-difference Jacobian ``jac [n * _BLOCK, len(z)]`` of the residuals ``res`` at ``z``: a variable of pose
    ``p`` moves the blocks of segments ``p - 1 .. p + 1``, an interval ``dT_i`` those of ``i, i + 1``."""
    jac[:] = 0.0
    block = np.empty(_BLOCK)
    free = 3 * (n - 1)
    for j in range(z.shape[0]):
        lo, hi = (j // 3, j // 3 + 3) if j < free else (j - free, j - free + 2)
        keep = z[j]
        z[j] = keep + 1e-4
        for i in range(lo, min(hi, n)):
            _block(z, n, start, end, i, vel0, lim, known_dist, known_id, cylinders, s, block)
            jac[i * _BLOCK : (i + 1) * _BLOCK, j] = (block - res[i * _BLOCK : (i + 1) * _BLOCK]) / 1e-4
        z[j] = keep


@njit(cache=True, nogil=True)
def _normal_equations(jac, res, n, jtj, jtr):
    """``J^T J`` and ``J^T r`` from the band's block-sparse Jacobian: block ``i`` depends only on poses
    ``i - 1 .. i + 1`` and intervals ``i - 1, i``."""
    jtj[:] = 0.0
    jtr[:] = 0.0
    free = 3 * (n - 1)
    cols = np.empty(11, dtype=np.int64)
    for i in range(n):
        k = 0
        for p in range(max(i - 1, 1), min(i + 1, n - 1) + 1):
            for c in range(3):
                cols[k] = 3 * (p - 1) + c
                k += 1
        for t in range(max(i - 1, 0), i + 1):
            cols[k] = free + t
            k += 1
        for row in range(i * _BLOCK, (i + 1) * _BLOCK):
            for a in range(k):
                ja = jac[row, cols[a]]
                if ja == 0.0:
                    continue
                jtr[cols[a]] += ja * res[row]
                for b in range(k):
                    jtj[cols[a], cols[b]] += ja * jac[row, cols[b]]


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
            if body_clearance(known_dist, known_id, cylinders, s, xf, yf, th, HULL_CIRCLES)[0] < FEASIBILITY_MARGIN:
                return False
        xa, ya, ta = xb, yb, tb
    return True


@njit(cache=True, nogil=True)
def _arc_clear(known_dist, known_id, cylinders, s, start, v, w) -> bool:
    """Whether holding ``(v, w)`` for ``COMMAND_CHECK`` s from ``start`` keeps the hull off the known obstacles."""
    x, y, th = start[0], start[1], start[2]
    for _ in range(int(round(COMMAND_CHECK / 0.05))):
        x, y, th = unicycle(x, y, th, v, w, 0.05)
        if body_clearance(known_dist, known_id, cylinders, s, x, y, th, HULL_CIRCLES)[0] < FEASIBILITY_MARGIN:
            return False
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
        n = min(max(int(np.ceil(length / (max_v * dt_ref) - 1e-6)), 2), MAX_SEGMENTS)
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
        vel0 = velocity[r]
        res, trial_res = np.empty(n * _BLOCK), np.empty(n * _BLOCK)
        jac = np.empty((n * _BLOCK, m))
        jtj, jtr = np.empty((m, m)), np.empty(m)
        _residuals(z, n, start, end, vel0, lim, known_dist, known_id, cylinders, s, res)
        cost, damping = res @ res, 1e-2
        for _ in range(ITERATIONS):
            _jacobian(z, n, start, end, vel0, lim, known_dist, known_id, cylinders, s, res, jac)
            _normal_equations(jac, res, n, jtj, jtr)
            for _attempt in range(4):
                a = jtj.copy()
                for j in range(m):
                    a[j, j] += damping * (1.0 + jtj[j, j])
                trial = z - np.linalg.solve(a, jtr)
                for j in range(3 * (n - 1), m):
                    trial[j] = max(trial[j], 1e-2)
                _residuals(trial, n, start, end, vel0, lim, known_dist, known_id, cylinders, s, trial_res)
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
        v = min(max(v, -lim[1]), max_v)
        w = min(max(wrap(t1 - start[2]) / dt, -lim[2]), lim[2])
        # The command itself, held for COMMAND_CHECK s, must keep the hull off the known obstacles too; if it does
        # not, at half the speed, then turning in place (teb's fallback when its trajectory is infeasible).
        for scale in (1.0, 0.5, 0.0):
            if _arc_clear(known_dist, known_id, cylinders, s, start, scale * v, w):
                v *= scale
                break
        else:
            v = np.nan
        out[r, 0], out[r, 1] = v, w
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
