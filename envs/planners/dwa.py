"""Vectorised DWA local planner with base_local_planner's TrajectoryPlanner semantics (``dwa: true``).

Per robot and control tick: sample ``vx_samples x vtheta_samples`` constant velocities inside the acceleration
window of one controller period, roll each out for ``sim_time``, reject those whose padded footprint touches a
known obstacle, and take the cheapest by
``path_distance_bias * path_dist + goal_distance_bias * goal_dist + occdist_scale * max_cell_cost``
(metre scoring, distances of the rollout's end point). With no valid forward motion it rotates in place towards the
plan, then backs up at ``escape_vel``, then stops. All candidates of all robots are one flat array: no Python loop
per robot or per candidate.
"""

from __future__ import annotations

import numpy as np

from envs.maps import KNOWN_RES, KNOWN_SHAPE, X0, Y0
from envs.planners.base import LocalPlanner, PlannerInput
from envs.planners.costmap import FOOTPRINT_HALF, inflation_cost
from envs.planners.params import DWA_PARAMS

# Three circles along the heading cover the padded footprint (0.62 x 0.53 m) with < 2 cm excess at the sides.
_N_COVER = 3
_COVER_SPACING = 2 * FOOTPRINT_HALF[0] / _N_COVER
_COVER_OFFSETS = (np.arange(_N_COVER) - (_N_COVER - 1) / 2) * _COVER_SPACING
_COVER_RADIUS = float(np.hypot(_COVER_SPACING / 2, FOOTPRINT_HALF[1]))


class DWAPlanner(LocalPlanner):
    """DWA driven by APPLR's 7 parameters (``DWA_PARAMS`` order).

    :param sim_time: Rollout horizon (s); ros_jackal 2.0.
    :param n_points: Rollout points checked per candidate (evenly spaced in time, the last at ``sim_time``).
    :param acc_lim: Planner acceleration limits (m/s^2, rad/s^2); ros_jackal 10, 20.
    :param sim_period: Controller period defining the dynamic window (s); 1 / 20 Hz.
    :param min_vel_x: Lowest forward speed sampled (m/s).
    :param min_in_place_vel_theta: Lowest in-place rotation speed (rad/s).
    :param escape_vel: Backing-up speed when nothing else is valid (m/s).
    :param occdist_scale: Weight of the maximum cell cost along the rollout.
    """

    params = DWA_PARAMS

    def __init__(
        self,
        sim_time: float = 2.0,
        n_points: int = 10,
        acc_lim: tuple[float, float] = (10.0, 20.0),
        sim_period: float = 0.05,
        min_vel_x: float = 0.1,
        min_in_place_vel_theta: float = 0.314,
        escape_vel: float = -0.5,
        occdist_scale: float = 0.1,
    ) -> None:
        self.times = np.linspace(sim_time / n_points, sim_time, n_points, dtype=np.float32)
        self.acc_window = (acc_lim[0] * sim_period, acc_lim[1] * sim_period)
        self.min_vel_x = min_vel_x
        self.min_in_place_vel_theta = min_in_place_vel_theta
        self.escape_vel = escape_vel
        self.occdist_scale = occdist_scale

    def compute_velocity(self, state: PlannerInput) -> np.ndarray:
        p = state.params
        n = p.shape[0]
        v, w = state.velocity[:, 0], state.velocity[:, 1]
        max_vx, max_th = p[:, 0], p[:, 1]
        nvx, nth = p[:, 2].astype(np.int64), p[:, 3].astype(np.int64)
        lo_x = np.maximum(self.min_vel_x, v - self.acc_window[0])
        hi_x = np.maximum(np.minimum(max_vx, v + self.acc_window[0]), self.min_vel_x)
        lo_x = np.minimum(lo_x, hi_x)
        lo_th = np.maximum(-max_th, w - self.acc_window[1])
        hi_th = np.maximum(np.minimum(max_th, w + self.acc_window[1]), lo_th)

        # Flat candidate list: robot e's candidates are contiguous, vx-major; j == 0 is the straight rollout and
        # j >= 1 walk from lo_th in (hi_th - lo_th) / (nth - 1) steps (TrajectoryPlanner's sampling).
        counts = nvx * nth
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        e = np.repeat(np.arange(n), counts)
        q = np.arange(counts.sum()) - starts[e]
        i, j = q // nth[e], q % nth[e]
        vx = lo_x[e] + i * ((hi_x - lo_x) / np.maximum(nvx - 1, 1))[e]
        vth = np.where(j == 0, 0.0, lo_th[e] + (j - 1) * ((hi_th - lo_th) / np.maximum(nth - 1, 1))[e])
        cost = self._score(state, e, vx.astype(np.float32), vth.astype(np.float32))

        best_cost = np.minimum.reduceat(cost, starts)
        first = np.flatnonzero(cost == best_cost[e])
        first = first[np.concatenate([[True], e[first][1:] != e[first][:-1]])]
        cmd = np.stack([vx[first], vth[first]], axis=1).astype(np.float32)
        stuck = np.flatnonzero(~np.isfinite(best_cost))
        if stuck.size:
            cmd[stuck] = self._recover(state, stuck, max_th[stuck], w[stuck])
        return cmd

    def _rollout(self, pose: np.ndarray, vx: np.ndarray, vth: np.ndarray) -> tuple[np.ndarray, ...]:
        """Constant-velocity rollouts ``[M, T]``: x, y, heading (exact arcs)."""
        t = self.times[None, :]
        x0, y0, th0 = pose[:, 0, None], pose[:, 1, None], pose[:, 2, None]
        dth = vth[:, None] * t
        chord = vx[:, None] * t * np.sinc(dth / (2 * np.pi))
        mid = th0 + dth / 2
        return x0 + chord * np.cos(mid), y0 + chord * np.sin(mid), th0 + dth

    def _lookup(self, state: PlannerInput, e: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        ix = np.minimum(np.maximum(((x - X0) * (1 / KNOWN_RES)).astype(np.int32), 0), KNOWN_SHAPE[1] - 1)
        iy = np.minimum(np.maximum(((y - Y0) * (1 / KNOWN_RES)).astype(np.int32), 0), KNOWN_SHAPE[0] - 1)
        slot = state.env[e].reshape((-1,) + (1,) * (x.ndim - 1))
        flat = slot * (KNOWN_SHAPE[0] * KNOWN_SHAPE[1]) + iy * KNOWN_SHAPE[1] + ix
        return state.known_dist.reshape(-1)[flat]

    def _clearance(self, state: PlannerInput, e: np.ndarray, vx: np.ndarray, vth: np.ndarray):
        """Rollouts of candidates ``[M]`` of robots ``e``: validity ``[M]``, centre distances ``[M, T]``, end x, y."""
        x, y, th = self._rollout(state.pose[e], vx, vth)
        off = _COVER_OFFSETS.astype(np.float32)
        cx = x[..., None] + np.cos(th)[..., None] * off
        cy = y[..., None] + np.sin(th)[..., None] * off
        d = self._lookup(state, e, cx, cy)  # [M, T, circles]
        valid = d.reshape(len(e), -1).min(axis=1) >= _COVER_RADIUS
        return valid, d[..., _N_COVER // 2], x[:, -1], y[:, -1]

    def _score(self, state: PlannerInput, e: np.ndarray, vx: np.ndarray, vth: np.ndarray) -> np.ndarray:
        """Cost of each candidate ``[M]``; ``inf`` for rejected ones."""
        valid, centre, ex, ey = self._clearance(state, e, vx, vth)
        infl = state.params[e, 6]
        occ = inflation_cost(centre, infl[:, None]).max(axis=1)
        path = state.local_path[e]
        path_dist = np.sqrt(((path[..., 0] - ex[:, None]) ** 2 + (path[..., 1] - ey[:, None]) ** 2).min(axis=1))
        goal = state.local_goal[e]
        goal_dist = np.hypot(goal[:, 0] - ex, goal[:, 1] - ey)
        p = state.params[e]
        cost = p[:, 4] * path_dist + p[:, 5] * goal_dist + self.occdist_scale * occ
        return np.where(valid, cost, np.inf).astype(np.float32)

    def _recover(self, state: PlannerInput, robots: np.ndarray, max_th: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Commands ``[S, 2]`` for robots with no valid forward rollout: rotate towards the plan, back up, stop."""
        pose = state.pose[robots]
        ahead = state.local_path[robots, min(state.local_path.shape[1] - 1, 6)]
        bearing = np.arctan2(ahead[:, 1] - pose[:, 1], ahead[:, 0] - pose[:, 0]) - pose[:, 2]
        sign = np.where(np.sin(bearing) >= 0, 1.0, -1.0)
        speed = np.clip(np.abs(w) + self.acc_window[1], self.min_in_place_vel_theta, np.maximum(max_th, 0.314))
        options = [(0.0, sign * speed), (0.0, -sign * speed), (self.escape_vel, np.zeros_like(speed))]
        cmd = np.zeros((len(robots), 2), dtype=np.float32)
        chosen = np.zeros(len(robots), dtype=bool)
        for vx, vth in options:
            vx = np.full(len(robots), vx, dtype=np.float32)
            valid, *_ = self._clearance(state, robots, vx, vth.astype(np.float32))
            take = valid & ~chosen
            cmd[take] = np.stack([vx, vth], axis=1)[take]
            chosen |= take
        return cmd
