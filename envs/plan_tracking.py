"""Where each robot is on its global plan, and the local goal move_base hands the local planner.

A mixin of :class:`envs.sim.BatchSim`: it reads the robots' ``pose [N, 3]``, plans ``path [N, MAX_PATH, 2]`` (m) with
``path_len [N]``, and keeps ``path_start [N]`` (the plan point closest to each robot, never moving back) and
``_goal_at [N]`` (the plan index of the last local goal, -1 to search in full).
"""

from __future__ import annotations

import numpy as np

LOCAL_WINDOW = 5.0
"""Half size of move_base's rolling local costmap (10 x 10 m): the local goal is the last plan point inside it."""
_GOAL_SEARCH = 110
"""Plan points ahead of the closest one searched for the local goal (>= 16 m of path: always leaves the window)."""
_GOAL_NEAR = 24
"""Plan points searched for the local goal from 4 before the previous one (it moves <= 1 point per tick)."""
_CLOSEST_SEARCH = 43
"""Plan points ahead of the last closest one searched for the new closest one (>= 6 m)."""


class PlanTracking:
    """Closest plan point and local goal of robots (see the module docstring for the attributes it needs)."""

    pose: np.ndarray
    path: np.ndarray
    path_len: np.ndarray
    path_start: np.ndarray
    _goal_at: np.ndarray

    def _closest(self, idx: np.ndarray) -> np.ndarray:
        """Index of the plan point closest to each robot, never behind the last one found."""
        ahead = np.minimum(self.path_start[idx, None] + np.arange(_CLOSEST_SEARCH), self.path_len[idx, None] - 1)
        pts = self.path[idx[:, None], ahead]
        dx, dy = pts[..., 0] - self.pose[idx, 0, None], pts[..., 1] - self.pose[idx, 1, None]
        closest = ahead[np.arange(idx.size), np.argmin(dx * dx + dy * dy, axis=1)]
        self.path_start[idx] = closest
        return closest

    def local_goal(self, idx: np.ndarray) -> np.ndarray:
        """move_base's local goal of robots ``idx``: the last plan point before the plan first leaves the rolling
        local-costmap window, ``[len(idx), 2]`` (m)."""
        return self._local_goal(idx)[0]

    def _local_goal(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Local goals ``[len(idx), 2]`` (m) and whether each is the plan's end, the final goal ``[len(idx)]``.

        The last plan point before the plan first leaves the window moves little between ticks, so it is searched
        near the previous one; robots whose answer lies outside that short stretch are searched in full.
        """
        closest = self._closest(idx)
        last = self.path_len[idx] - 1
        prev = self._goal_at[idx]
        start = np.where(prev >= 0, np.maximum(closest, prev - 4), closest)
        at, decided = self._first_exit(idx, start, last, _GOAL_NEAR)
        redo = ~decided | (at < start)
        if redo.any():
            full = self._first_exit(idx[redo], closest[redo], last[redo], _GOAL_SEARCH)[0]
            at[redo] = np.maximum(full, closest[redo])
        self._goal_at[idx] = at
        return self.path[idx, at], at == last

    def _first_exit(
        self, idx: np.ndarray, start: np.ndarray, last: np.ndarray, count: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Among plan points ``start ..`` (``count`` of them) of robots ``idx``: the one before the first outside
        the rolling window ``[len(idx)]`` (``start - 1`` if ``start`` is outside), and whether that is decided (the
        stretch left the window or reached the plan's end)."""
        ahead = np.minimum(start[:, None] + np.arange(count), last[:, None])
        pts = self.path[idx[:, None], ahead]
        dx, dy = pts[..., 0] - self.pose[idx, 0, None], pts[..., 1] - self.pose[idx, 1, None]
        outside = (np.abs(dx) > LOCAL_WINDOW) | (np.abs(dy) > LOCAL_WINDOW)
        left = outside.any(axis=1)
        at = np.where(left, start + outside.argmax(axis=1) - 1, ahead[:, -1])
        return at, left | (ahead[:, -1] == last)
