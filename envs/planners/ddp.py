"""Vectorised DDP local planner: an iLQR trajectory optimiser over the unicycle, started from sampled constant arcs,
driven by FTRL's 6 DDP parameters (docs/guide/simulator.md "How each planner works")."""

from __future__ import annotations

import numpy as np
from numba import njit

from envs import robot
from envs.planners.base import PeriodicPlanner, PlannerInput
from envs.planners.kernels import (
    HULL_CIRCLES,
    body_clearance,
    centre_cost,
    path_arclength,
    point_at,
    project,
    unicycle,
    wrap,
)
from envs.planners.params import DDP_PARAMS

STEP, HORIZON = 0.1, 15
"""Step (s) and number of steps of the optimised control sequence (1.5 s)."""
ITERATIONS = 2
"""iLQR iterations per optimisation (warm-started, so few are needed)."""
W_REF, W_OBS, W_TURN, W_COST = 1.0, 50.0, 0.02, 0.5
"""Cost weights: plan tracking (/m^2), obstacle margin (/m^2), turning (/(rad/s)^2), costmap cell cost."""
REF_LEAD = 0.25
"""The reference starts this far (m) ahead of the robot's projection on the plan: standing still never tracks it."""
RECOVERY_TURN = 1.0
"""Turn rate (rad/s) of the in-place turn towards the plan when no solution keeps clear or the solution stalls."""
STALLED = (0.05, 0.1)
"""A first control slower than this (m/s, rad/s) is a stall (a local minimum of the optimiser)."""
PAIR_STRIDE = 5
"""The initial pairs are scored on every fifth step (0.5 s apart) of their rollouts."""
_ALPHAS = (1.0, 0.5, 0.25, 0.1)


@njit(cache=True, nogil=True)
def _project(u, v0, w0, lim):
    """Clip controls ``u [H, 2]`` in place to the velocity limits ``lim`` (v low, v high, |w| high) and to the
    base's acceleration limits from the measured velocity ``(v0, w0)``."""
    dv, dw = robot.ACC_LINEAR * STEP, robot.ACC_ANGULAR * STEP
    v, w = v0, w0
    for t in range(u.shape[0]):
        v = min(max(u[t, 0], v - dv, lim[0]), v + dv, lim[1])
        w = min(max(u[t, 1], w - dw, -lim[2]), w + dw, lim[2])
        u[t, 0], u[t, 1] = v, w


@njit(cache=True, nogil=True)
def _stage(known_dist, known_id, cylinders, s, x, y, th, w, rx, ry, margin, inflation):
    """Stage cost and its position gradient ``(gx, gy)`` and obstacle Gauss-Newton direction ``(ox, oy)``."""
    d, gx, gy = body_clearance(known_dist, known_id, cylinders, s, x, y, th, HULL_CIRCLES)
    ex, ey = x - rx, y - ry
    cost = W_REF * (ex * ex + ey * ey) + W_TURN * w * w + W_COST * centre_cost(known_dist, s, x, y, inflation)
    hinge = max(margin - d, 0.0)
    cost += W_OBS * hinge * hinge
    # d(hinge^2)/dp = -2 hinge grad(d)
    return cost, 2 * W_REF * ex - 2 * W_OBS * hinge * gx, 2 * W_REF * ey - 2 * W_OBS * hinge * gy, hinge, gx, gy, d


@njit(cache=True, nogil=True)
def _cost(known_dist, known_id, cylinders, s, pose, u, ref, margin, inflation):
    """Total cost of controls ``u [H, 2]`` from ``pose`` and the least hull clearance (m) along the rollout."""
    x, y, th = pose[0], pose[1], pose[2]
    total, least = 0.0, np.inf
    for t in range(u.shape[0]):
        x, y, th = unicycle(x, y, th, u[t, 0], u[t, 1], STEP)
        c, _, _, _, _, _, d = _stage(known_dist, known_id, cylinders, s, x, y, th, u[t, 1], ref[t, 0], ref[t, 1],
                                     margin, inflation)  # fmt: skip
        total += c
        least = min(least, d)
    return total, least


@njit(cache=True, nogil=True)
def _pair_cost(known_dist, known_id, cylinders, s, pose, v, w, ref, margin, inflation):
    """Cost of holding ``(v, w)`` over the horizon from ``pose`` (exact arcs), the stage costs of every
    ``PAIR_STRIDE``-th step only, times ``PAIR_STRIDE``."""
    total = 0.0
    x0, y0, th0 = pose[0], pose[1], pose[2]
    for t in range(PAIR_STRIDE - 1, HORIZON, PAIR_STRIDE):
        tt = (t + 1) * STEP
        if abs(w) < 1e-6:
            x, y = x0 + v * tt * np.cos(th0), y0 + v * tt * np.sin(th0)
        else:
            x = x0 + v / w * (np.sin(th0 + w * tt) - np.sin(th0))
            y = y0 - v / w * (np.cos(th0 + w * tt) - np.cos(th0))
        th = th0 + w * tt
        c = _stage(known_dist, known_id, cylinders, s, x, y, th, w, ref[t, 0], ref[t, 1], margin, inflation)[0]
        total += PAIR_STRIDE * c
    return total


@njit(cache=True, nogil=True)
def _ilqr_step(known_dist, known_id, cylinders, s, pose, vel, u, ref, margin, inflation, lim):
    """One iLQR iteration on ``u [H, 2]`` (in place when it lowers the cost); returns the cost."""
    h = u.shape[0]
    xs = np.empty((h + 1, 3))
    xs[0] = pose
    for t in range(h):
        xs[t + 1, 0], xs[t + 1, 1], xs[t + 1, 2] = unicycle(xs[t, 0], xs[t, 1], xs[t, 2], u[t, 0], u[t, 1], STEP)
    vx, vxx = np.zeros(3), np.zeros((3, 3))
    kff, kfb = np.zeros((h, 2)), np.zeros((h, 2, 3))
    fx, fu = np.eye(3), np.zeros((3, 2))
    for t in range(h - 1, -1, -1):
        x, y, th = xs[t + 1]
        _, lx, ly, hinge, ox, oy, _ = _stage(known_dist, known_id, cylinders, s, x, y, th, u[t, 1], ref[t, 0],
                                             ref[t, 1], margin, inflation)  # fmt: skip
        # The cost of step t is a function of x_{t+1} = f(x_t, u_t): fold it into V before differentiating f.
        vx[0] += lx
        vx[1] += ly
        vxx[0, 0] += 2 * W_REF
        vxx[1, 1] += 2 * W_REF
        if hinge > 0:
            vxx[0, 0] += 2 * W_OBS * ox * ox
            vxx[0, 1] += 2 * W_OBS * ox * oy
            vxx[1, 0] += 2 * W_OBS * ox * oy
            vxx[1, 1] += 2 * W_OBS * oy * oy
        th0, v, w = xs[t, 2], u[t, 0], u[t, 1]
        mid = th0 + 0.5 * w * STEP
        c, sn = np.cos(mid), np.sin(mid)
        fx[0, 2], fx[1, 2] = -v * STEP * sn, v * STEP * c
        fu[0, 0], fu[1, 0], fu[2, 0] = STEP * c, STEP * sn, 0.0
        fu[0, 1], fu[1, 1], fu[2, 1] = -0.5 * v * STEP * STEP * sn, 0.5 * v * STEP * STEP * c, STEP
        qx, qu = fx.T @ vx, fu.T @ vx
        qu[1] += 2 * W_TURN * w
        qxx, quu, qux = fx.T @ vxx @ fx, fu.T @ vxx @ fu, fu.T @ vxx @ fx
        quu[0, 0] += 1e-3
        quu[1, 1] += 2 * W_TURN + 1e-3
        det = quu[0, 0] * quu[1, 1] - quu[0, 1] * quu[1, 0]
        inv = np.array([[quu[1, 1], -quu[0, 1]], [-quu[1, 0], quu[0, 0]]]) / det
        kff[t] = -inv @ qu
        kfb[t] = -inv @ qux
        vx = qx + kfb[t].T @ quu @ kff[t] + kfb[t].T @ qu + qux.T @ kff[t]
        vxx = qxx + kfb[t].T @ quu @ kfb[t] + kfb[t].T @ qux + qux.T @ kfb[t]
        vxx = 0.5 * (vxx + vxx.T)
    base, _ = _cost(known_dist, known_id, cylinders, s, pose, u, ref, margin, inflation)
    trial = np.empty_like(u)
    for alpha in _ALPHAS:
        x = pose.copy()
        for t in range(h):
            du = alpha * kff[t] + kfb[t] @ (x - xs[t])
            trial[t, 0], trial[t, 1] = u[t, 0] + du[0], u[t, 1] + du[1]
            x[0], x[1], x[2] = unicycle(x[0], x[1], x[2], trial[t, 0], trial[t, 1], STEP)
        _project(trial, vel[0], vel[1], lim)
        cost, _ = _cost(known_dist, known_id, cylinders, s, pose, trial, ref, margin, inflation)
        if cost < base:
            u[:] = trial
            return cost
    return base


@njit(cache=True, nogil=True)
def ddp_plan(known_dist, known_id, cylinders, env, pose, velocity, params, path, warm):
    """Commands ``[N, 2]`` (NaN rows: no valid command); updates the warm start ``warm [N, HORIZON, 2]`` in place.

    Per robot ``[N, ...]``: world slot ``env``, ``pose`` (m, rad), measured ``velocity`` (m/s, rad/s), DDP
    ``params`` (physical), local ``path``
    ``[N, KP, 2]`` (m). ``warm`` rows with NaN have no previous solution.
    """
    n = pose.shape[0]
    out = np.full((n, 2), np.nan, dtype=np.float32)
    for r in range(n):
        s = env[r]
        max_v, max_w, pairs = params[r, 0], params[r, 1], int(params[r, 2])
        margin, pad, inflation = params[r, 3] + params[r, 4], params[r, 4], params[r, 5]
        lim = np.array([0.0, max_v, max_w])
        arc = path_arclength(path[r])
        along = project(path[r], arc, pose[r, 0], pose[r, 1])
        ref = np.empty((HORIZON, 2))
        for t in range(HORIZON):
            ref[t, 0], ref[t, 1], _ = point_at(path[r], arc, along + REF_LEAD + max_v * STEP * (t + 1))
        # Initial guess: the cheapest of the nr_pairs_ constant (v, w) pairs (a 2-D low-discrepancy set over the
        # window) and the previous solution shifted by one optimisation period.
        best = np.empty((HORIZON, 2))
        best_cost, best_pair = np.inf, 0
        for k in range(pairs):
            v, w = max_v * ((k + 0.5) / pairs), max_w * (2.0 * ((k * 0.6180339887498949) % 1.0) - 1.0)
            cost = _pair_cost(known_dist, known_id, cylinders, s, pose[r], v, w, ref, margin, inflation)
            if cost < best_cost:
                best_cost, best_pair = cost, k
        best[:, 0] = max_v * ((best_pair + 0.5) / pairs)
        best[:, 1] = max_w * (2.0 * ((best_pair * 0.6180339887498949) % 1.0) - 1.0)
        _project(best, velocity[r, 0], velocity[r, 1], lim)
        if not np.isnan(warm[r, 0, 0]):
            trial = warm[r].copy()
            _project(trial, velocity[r, 0], velocity[r, 1], lim)
            if (
                _cost(known_dist, known_id, cylinders, s, pose[r], trial, ref, margin, inflation)[0]
                < _cost(known_dist, known_id, cylinders, s, pose[r], best, ref, margin, inflation)[0]
            ):
                best[:] = trial
        for _ in range(ITERATIONS):
            _ilqr_step(known_dist, known_id, cylinders, s, pose[r], velocity[r], best, ref, margin, inflation, lim)
        _, least = _cost(known_dist, known_id, cylinders, s, pose[r], best, ref, margin, inflation)
        if least < pad or (abs(best[0, 0]) < STALLED[0] and abs(best[0, 1]) < STALLED[1]):
            # FTRL's DDP recovers by turning in place: towards the plan, if that keeps clear.
            warm[r] = np.nan
            turn = wrap(np.arctan2(ref[-1, 1] - pose[r, 1], ref[-1, 0] - pose[r, 0]) - pose[r, 2])
            best[:, 0], best[:, 1] = 0.0, np.sign(turn) * min(max_w, RECOVERY_TURN)
            _project(best, velocity[r, 0], velocity[r, 1], lim)
            if _cost(known_dist, known_id, cylinders, s, pose[r], best, ref, margin, inflation)[1] >= pad:
                out[r, 0], out[r, 1] = best[0, 0], best[0, 1]
            continue
        out[r, 0], out[r, 1] = best[0, 0], best[0, 1]
        warm[r, :-1] = best[1:]
        warm[r, -1] = best[-1]
    return out


class DDPPlanner(PeriodicPlanner):
    """DDP (iLQR) driven by FTRL's 6 parameters (``DDP_PARAMS`` order: ``max_vel_x, max_vel_theta, nr_pairs_,
    distance, robot_radius, inflation_radius``); see the module docstring.

    :param period: Control ticks between optimisations (2: 10 Hz).
    """

    params = DDP_PARAMS
    slot_state = {"_warm": (HORIZON, 2)}

    def plan(self, state: PlannerInput) -> np.ndarray:
        slot = state.env
        warm = self._warm[slot].astype(np.float64)
        f64 = {name: getattr(state, name).astype(np.float64) for name in ("pose", "velocity", "params", "local_path")}
        cmd = ddp_plan(
            state.known_dist, state.known_id, state.cylinders, slot, f64["pose"], f64["velocity"], f64["params"],
            f64["local_path"], warm,
        )  # fmt: skip
        self._warm[slot] = warm
        return cmd
