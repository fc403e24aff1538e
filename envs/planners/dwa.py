"""Vectorised DWA local planner with base_local_planner's TrajectoryPlanner semantics (``dwa: true``): sampled
constant-velocity rollouts, ``meter_scoring`` costs, in-place rotation and blind escapes
(docs/guide/simulator.md "How each planner works")."""

from __future__ import annotations

import numpy as np

from envs.maps import KNOWN_RES, KNOWN_SHAPE, X0, Y0
from envs.planners.base import LocalPlanner, PlannerInput
from envs.planners.dwa_kernels import check_rollouts, score_rollouts
from envs.planners.global_planner import PLAN_RES
from envs.planners.params import DWA_PARAMS

_HEADING_LOOKAHEAD = 0.325
"""TrajectoryPlanner ``heading_lookahead`` (m): in-place rotations are ranked by the goal distance of this point."""


class DWAPlanner(LocalPlanner):
    """DWA driven by APPLR's 7 parameters (``DWA_PARAMS`` order); fixed settings are ros_jackal's.

    :param sim_time: Rollout horizon (s); ros_jackal 2.0.
    :param spacing: Largest step (m) between the rollout poses checked (evenly spaced in time, the last at
        ``sim_time``): consecutive padded footprints (0.62 m long) overlap by >= 0.42 m.
    :param angular_spacing: Largest heading step (rad) between checked poses: the footprint's corners (0.41 m out)
        leave slivers ~2 cm deep unchecked, within the rasterisation margin.
    :param acc_lim: Planner acceleration limits (m/s^2, rad/s^2); ros_jackal 10, 20.
    :param sim_period: Controller period defining the dynamic window (s); 1 / 20 Hz.
    :param min_vel_x: Lowest forward speed sampled (m/s).
    :param min_in_place_vel_theta: Lowest in-place rotation speed (rad/s).
    :param escape_vel: Backing-up speed when nothing else is valid (m/s).
    :param escape_reset_dist: Distance (m) ...
    :param escape_reset_theta: ... or rotation (rad) after which an escape ends; ros_jackal 0.1, 0.1.
    :param occdist_scale: Weight of the maximum cell cost along the rollout; ros_jackal 0.1.
    :param resolution: Costmap resolution (m) that ``meter_scoring`` multiplies the weights by; 0.05.
    """

    params = DWA_PARAMS

    def __init__(
        self,
        sim_time: float = 2.0,
        spacing: float = 0.2,
        angular_spacing: float = 0.65,
        acc_lim: tuple[float, float] = (10.0, 20.0),
        sim_period: float = 0.05,
        min_vel_x: float = 0.1,
        min_in_place_vel_theta: float = 0.314,
        escape_vel: float = -0.5,
        escape_reset_dist: float = 0.1,
        escape_reset_theta: float = 0.1,
        occdist_scale: float = 0.1,
        resolution: float = 0.05,
    ) -> None:
        self.sim_time, self.spacing, self.angular_spacing = sim_time, spacing, angular_spacing
        self.acc_window = (acc_lim[0] * sim_period, acc_lim[1] * sim_period)
        self.min_vel_x = min_vel_x
        self.min_in_place_vel_theta = min_in_place_vel_theta
        self.escape_vel = escape_vel
        self.escape_reset = (escape_reset_dist, escape_reset_theta)
        self.occ_weight = occdist_scale * resolution
        self._escape_from = np.full((0, 3), np.nan, dtype=np.float32)
        self._layout_cache: dict[bytes, tuple[np.ndarray, ...]] = {}

    def reset(self, i: int) -> None:
        """Forget the escape state of slot ``i``."""
        if i < len(self._escape_from):
            self._escape_from[i] = np.nan

    def compute_velocity(self, state: PlannerInput) -> np.ndarray:
        if len(self._escape_from) < len(state.known_dist):
            grown = np.full((len(state.known_dist), 3), np.nan, dtype=np.float32)
            grown[: len(self._escape_from)] = self._escape_from
            self._escape_from = grown
        # How finely a robot's rollouts are checked follows its own speed limits; robots are grouped by it (a few
        # groups at most) so that no robot's command depends on the parameters of the others in the batch.
        points = self._n_points(state.params[:, 0], state.params[:, 1])
        groups = np.unique(points)
        if len(groups) == 1:
            return self._compute(state, self._times(int(groups[0])))
        cmd = np.empty((len(points), 2), dtype=np.float32)
        for g in groups:
            rows = np.flatnonzero(points == g)
            cmd[rows] = self._compute(state.rows(rows), self._times(int(g)))
        return cmd

    def _compute(self, state: PlannerInput, times: np.ndarray) -> np.ndarray:
        """:meth:`compute_velocity` for robots whose rollouts are checked at ``times [T]`` (s)."""
        p = state.params
        n = p.shape[0]
        v, w = state.velocity[:, 0], state.velocity[:, 1]
        max_vx, max_th = p[:, 0], p[:, 1]
        nvx, nth = p[:, 2].astype(np.int64), p[:, 3].astype(np.int64)
        lo_x = np.maximum(self.min_vel_x, v - self.acc_window[0])
        hi_x = np.minimum(max_vx, v + self.acc_window[0])
        # Near the final goal TrajectoryPlanner caps the speed at what reaches it within sim_time.
        to_goal = np.hypot(state.local_goal[:, 0] - state.pose[:, 0], state.local_goal[:, 1] - state.pose[:, 1])
        hi_x = np.where(state.goal_is_final, np.minimum(hi_x, to_goal / self.sim_time), hi_x)
        hi_x = np.maximum(hi_x, self.min_vel_x)
        lo_x = np.minimum(lo_x, hi_x)
        lo_th = np.maximum(-max_th, w - self.acc_window[1])
        hi_th = np.maximum(np.minimum(max_th, w + self.acc_window[1]), lo_th)
        escaping = self._update_escape(state)

        th_robot, j, starts, e, i, row = self._layout(nvx, nth)
        dth = ((hi_th - lo_th) / np.maximum(nth - 1, 1))[th_robot]
        vth = np.where(j == 0, 0.0, lo_th[th_robot] + (j - 1) * dth).astype(np.float32)
        arcs = self._arcs(state.pose[th_robot], vth, times)
        vx = (lo_x[e] + i * ((hi_x - lo_x) / np.maximum(nvx - 1, 1))[e]).astype(np.float32)
        cost = self._score(state, e, vx, arcs, row)
        if escaping.any():
            cost[escaping[e]] = np.inf

        best_cost = np.minimum.reduceat(cost, starts)
        first = np.flatnonzero(cost == best_cost[e])
        first = first[np.concatenate([[True], e[first][1:] != e[first][:-1]])]
        cmd = np.zeros((n, 2), dtype=np.float32)
        moving = np.isfinite(best_cost)
        cmd[moving] = np.stack([vx[first], vth[row[first]]], axis=1)[moving]
        blocked = np.flatnonzero(~moving)
        if blocked.size:
            cmd[blocked] = self._unblock(state, blocked, lo_th[blocked], hi_th[blocked], nth[blocked])
        return cmd

    def _layout(self, nvx: np.ndarray, nth: np.ndarray) -> tuple[np.ndarray, ...]:
        """Flat sample layout for per-robot sample counts ``nvx, nth [N]`` (cached: it changes only with them).

        Angular table: robot r's vtheta samples are contiguous (robot ``th_robot``, index ``j``); j == 0 is the
        straight rollout and j >= 1 walk from lo_th in (hi_th - lo_th) / (nth - 1) steps (TrajectoryPlanner's
        sampling). Candidates: robot e's nvx x nth start at ``starts[e]``, vx-major (vx index ``i``), each using
        column ``row`` of the angular table.
        """
        key = nvx.tobytes() + nth.tobytes()
        if key not in self._layout_cache:
            if len(self._layout_cache) >= 16:
                self._layout_cache.clear()
            n = len(nvx)
            th_start = np.cumsum(nth) - nth
            th_robot = np.repeat(np.arange(n), nth)
            j = np.arange(th_start[-1] + nth[-1]) - th_start[th_robot]
            counts = nvx * nth
            starts = np.cumsum(counts) - counts
            e = np.repeat(np.arange(n), counts)
            q = np.arange(starts[-1] + counts[-1]) - starts[e]
            i = q // nth[e]
            self._layout_cache[key] = (th_robot, j, starts, e, i, th_start[e] + q - i * nth[e])
        return self._layout_cache[key]

    def _update_escape(self, state: PlannerInput) -> np.ndarray:
        """End the escapes that have moved or turned far enough; whether each robot ``[N]`` is still escaping."""
        origin = self._escape_from[state.env]
        moved = np.hypot(*(state.pose[:, :2] - origin[:, :2]).T)
        turned = np.abs((state.pose[:, 2] - origin[:, 2] + np.pi) % (2 * np.pi) - np.pi)
        done = (moved > self.escape_reset[0]) | (turned > self.escape_reset[1])
        self._escape_from[state.env[done]] = np.nan
        return ~np.isnan(origin[:, 0]) & ~done

    def _n_points(self, speed: np.ndarray | float, turn_rate: np.ndarray | float) -> np.ndarray:
        """Points checked per rollout (``[N]``, or a scalar) for speed limits ``speed`` (m/s) and ``turn_rate``
        (rad/s): poses at most ``spacing`` m and ``angular_spacing`` rad apart, at least 3."""
        steps = np.maximum(speed * self.sim_time / self.spacing, turn_rate * self.sim_time / self.angular_spacing)
        return np.maximum(np.ceil(steps - 1e-6), 3).astype(np.int64)

    def _times(self, n_points: int) -> np.ndarray:
        """Times ``[n_points]`` (s) of the checked rollout poses, evenly spaced, the last at ``sim_time``."""
        return np.linspace(self.sim_time / n_points, self.sim_time, n_points, dtype=np.float32)

    def _arcs(self, pose: np.ndarray, vth: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, ...]:
        """Per-unit-speed arcs ``[T, R]`` at ``times [T]`` of constant-velocity rollouts with angular speeds
        ``vth [R]`` from poses ``[R, 3]``: a rollout at linear speed ``vx`` reaches ``(x0 + vx * ax, y0 + vx * ay)``
        with heading ``th`` (the last entry is ``times``).

        Time runs along the first axis throughout: reductions over time are then element-wise minima of rows.
        """
        t = times[:, None]
        half = vth[None, :] * (t / 2)
        # Chord of the arc: v t sin(h) / h with h = w t / 2 (-> v t for straight lines), along th0 + h.
        small = np.abs(half) < 1e-6
        chord = t * np.where(small, 1.0, np.sin(half) / np.where(small, 1.0, half))
        mid = pose[None, :, 2] + half
        return chord * np.cos(mid), chord * np.sin(mid), mid + half, times

    def _flat(self, slot: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Flat index into the known grids of points ``x, y`` (m) of world slots ``slot`` (broadcast)."""
        return self._flat_grid(slot, (x - X0) * (1 / KNOWN_RES), (y - Y0) * (1 / KNOWN_RES))

    def _flat_grid(self, slot: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
        """Flat index into the known grids of points ``gx, gy`` in grid units of world slots ``slot`` (broadcast)."""
        flat = gy.astype(np.int32)
        np.clip(flat, 0, KNOWN_SHAPE[0] - 1, out=flat)
        flat *= KNOWN_SHAPE[1]
        ix = gx.astype(np.int32)
        np.clip(ix, 0, KNOWN_SHAPE[1] - 1, out=ix)
        flat += ix
        flat += (slot * (KNOWN_SHAPE[0] * KNOWN_SHAPE[1])).astype(np.int32)
        return flat

    def _lookup(self, state: PlannerInput, slot: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Known-obstacle distance (m) at points ``x, y`` of world slots ``slot`` (broadcast against them)."""
        return np.take(state.known_dist, self._flat(slot, x, y))  # np.take: faster than fancy indexing

    def _check(self, state: PlannerInput, e: np.ndarray, vx: np.ndarray, arcs: tuple[np.ndarray, ...], row: np.ndarray):
        """Rollouts of candidates ``[M]`` (robot ``e``, speed ``vx``, angular-table column ``row``): validity
        ``[M]``, least centre clearance ``[M]`` (m, at most ``KNOWN_CAP``) and end pose ``[M, 3]``.

        TrajectoryPlanner rejects a rollout when, at any checked pose, the padded footprint touches an obstacle, or
        the centre lies in an inscribed cell (its "no clear path" cost -2; poses still inside the start footprint
        are exempt). Centre clearance >= the circumscribed radius means no contact; in between, the padded
        rectangle is tested exactly against the nearest known cylinders of the centre and two probes on the axis.
        """
        ax, ay, th, times = arcs
        px, py = np.take(np.ascontiguousarray(state.pose[:, 0]), e), np.take(np.ascontiguousarray(state.pose[:, 1]), e)
        end = np.stack([px + vx * ax[-1, row], py + vx * ay[-1, row], th[-1, row]], axis=1)
        valid, least = check_rollouts(
            state.known_dist, state.known_id, state.cylinders, state.env[e], px, py, vx, row, ax, ay, th, times,
            state.clearance[e], state.params[e, 6], self.sim_time,
        )  # fmt: skip
        return valid, least, end

    def _score(
        self, state: PlannerInput, e: np.ndarray, vx: np.ndarray, arcs: tuple[np.ndarray, ...], row: np.ndarray
    ) -> np.ndarray:
        """Cost of each candidate ``[M]``; ``inf`` for rejected ones (see :func:`score_rollouts`)."""
        # Only plan points the end points can be nearest to: within the fastest possible rollout's reach + 0.5 m
        # (a fixed bound: a robot's costs must not depend on the other robots' parameters).
        reach = float(self.params.high[0]) * self.sim_time + 0.5
        path = np.ascontiguousarray(state.local_path[:, : int(np.ceil(reach / PLAN_RES))])
        ax, ay, th, times = arcs
        weights = np.array([self.sim_time, self.occ_weight], dtype=np.float32)
        return score_rollouts(
            state.known_dist, state.known_id, state.cylinders, state.env, state.pose, state.params, state.clearance,
            path, state.local_goal, e, vx, row, ax, ay, th, times, weights,
        )  # fmt: skip

    def _unblock(
        self, state: PlannerInput, robots: np.ndarray, lo_th: np.ndarray, hi_th: np.ndarray, nth: np.ndarray
    ) -> np.ndarray:
        """Commands ``[S, 2]`` for robots with no valid forward rollout: the valid in-place rotation whose
        lookahead point is nearest the local goal, else an escape backwards."""
        # In-place rotations over the same window, at least min_in_place_vel_theta fast.
        counts = nth
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        r = np.repeat(np.arange(len(robots)), counts)
        j = np.arange(counts.sum()) - starts[r]
        vth = lo_th[r] + j * ((hi_th - lo_th) / np.maximum(nth - 1, 1))[r]
        vth = np.where(vth >= 0, 1.0, -1.0) * np.maximum(np.abs(vth), self.min_in_place_vel_theta)
        vth = vth.astype(np.float32)
        e = robots[r]
        # Checked as finely as the fastest possible rotation needs (a fixed resolution: see compute_velocity).
        arcs = self._arcs(state.pose[e], vth, self._times(int(self._n_points(0.0, self.params.high[1]))))
        valid, _, end = self._check(state, e, np.zeros_like(vth), arcs, np.arange(len(e)))
        goal = state.local_goal[e]
        ahead_x = end[:, 0] + _HEADING_LOOKAHEAD * np.cos(end[:, 2])
        ahead_y = end[:, 1] + _HEADING_LOOKAHEAD * np.sin(end[:, 2])
        cost = np.where(valid, np.hypot(goal[:, 0] - ahead_x, goal[:, 1] - ahead_y), np.inf)
        best = np.minimum.reduceat(cost, starts)
        pick = np.flatnonzero(cost == best[r])
        pick = pick[np.concatenate([[True], r[pick][1:] != r[pick][:-1]])]
        cmd = np.zeros((len(robots), 2), dtype=np.float32)
        rotate = np.isfinite(best)
        cmd[rotate, 1] = vth[pick][rotate]
        back = robots[~rotate]
        # TrajectoryPlanner backs up even when the backward rollout is predicted to collide: its footprint check
        # comes first on every rollout pose and returns -1, which the escape turns into cost 1.0 ("we'll allow moving
        # backwards slowly even when the static map shows it as blocked"). The rear 90 degrees are blind.
        cmd[~rotate, 0] = self.escape_vel
        fresh = back[np.isnan(self._escape_from[state.env[back], 0])]
        self._escape_from[state.env[fresh]] = state.pose[fresh]
        return cmd
