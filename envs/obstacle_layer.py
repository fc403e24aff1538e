"""The local costmap's obstacle layer: laser marking, footprint clearing, rebuilding after forgetting, and what the
planners read of it (known-obstacle distance at points, nearest-obstacle clearance).

A mixin of :class:`envs.sim.BatchSim`: it writes the robots' known maps ``known_dist``, ``known_id`` ``[N, KH, KW]``
and ``seen [N, K]`` from the costmap's cylinder marks ``marked [N, K, 2]`` (m), reads ``pose``, ``params``
(column ``inflation_col``: the inflation radius), the plan (``path``, ``path_start``, ``path_len``) to flag stale
plans, and keeps ``_clearance [N, 3]`` (nearest seen cylinder's surface distance, m, measured from ``(x, y)``).
"""

from __future__ import annotations

import numpy as np

from envs import lidar
from envs.maps import KNOWN_CAP, KNOWN_RES, KNOWN_SHAPE, X0, Y0, stamp_known
from envs.planners.costmap import FOOTPRINT_HALF, INSCRIBED_RADIUS
from envs.worlds import CYLINDER_RADIUS

FOOTPRINT_CLEARING = CYLINDER_RADIUS - KNOWN_RES / 2
"""costmap_2d's obstacle layer sets the cells under the padded footprint free after marking (``footprint_clearing``,
on by default). A known cylinder whose centre comes within this distance (m) of the padded rectangle has lost all
but a sliver of its cells, too thin for TrajectoryPlanner's rasterised outline: it vanishes from both planners' map
(and rotate_recovery's check) until a scan sees it from outside the footprint. The rear 90 degrees are blind."""
OBSTACLE_RANGE = 2.5
"""Laser returns farther than this do not mark the costmap (costmap_2d ``obstacle_range``)."""
_STALE_AHEAD = 27
"""Plan points ahead (>= 4 m) that a newly seen obstacle must come near to make the plan stale."""


class ObstacleLayer:
    """Laser marking and footprint clearing of robots' known maps (see the module docstring for the attributes)."""

    def _restamp(self, i: int) -> None:
        """Rebuild robot ``i``'s known map from the cylinders it still counts as seen (after some were forgotten)."""
        self._clearance[i] = np.nan
        self.known_dist[i] = KNOWN_CAP
        self.known_id[i] = -1
        keep = np.flatnonzero(self.seen[i, : self.n_cylinders[i]])
        stamp_known(self.known_dist, self.known_id, np.full(keep.size, i), self.marked[i, keep], keep)

    def _known_at(self, idx: np.ndarray, xy: np.ndarray) -> np.ndarray:
        """Known-obstacle distance (m) at points ``[len(idx), 2]`` of robots ``idx``."""
        ix = np.clip(((xy[:, 0] - X0) / KNOWN_RES).astype(np.int64), 0, KNOWN_SHAPE[1] - 1)
        iy = np.clip(((xy[:, 1] - Y0) / KNOWN_RES).astype(np.int64), 0, KNOWN_SHAPE[0] - 1)
        return self.known_dist[idx, iy, ix]

    def _scan(self, idx: np.ndarray, k: int) -> None:
        """Laser scan ``k`` of this step for robots ``idx``; mark newly seen cylinders into their known maps."""
        if idx.size == 0:
            return
        ranges, hit = lidar.scan(self.pose[idx], self.cylinders[idx])
        ranges += self._range_noise[idx, min(k, self._scans_per_step - 1)]
        self.ranges[idx] = ranges
        # Footprint clearing: marked, then wiped where they lie under the padded footprint.
        under = self._under_footprint(idx)
        for i in idx[np.any(under & self.seen[idx], axis=1)]:
            self.seen[i] &= ~under[np.searchsorted(idx, i)]
            self._restamp(i)
        row, beam = np.nonzero(ranges <= OBSTACLE_RANGE)
        robots, cyl = idx[row], hit[row, beam]
        new = ~self.seen[robots, cyl] & ~under[row, cyl]
        if not new.any():
            return
        key = np.unique(robots[new] * self.seen.shape[1] + cyl[new])
        robots, cyl = np.divmod(key, self.seen.shape[1])
        self.seen[robots, cyl] = True
        self._clearance[robots] = np.nan
        centres = self.marked[robots, cyl]
        stamp_known(self.known_dist, self.known_id, robots, centres, cyl)
        # Stale plans: a new obstacle within the inflated reach of the next ~4 m of plan.
        ahead = self.path_start[robots, None] + np.arange(_STALE_AHEAD)[None, :]
        ahead = np.minimum(ahead, self.path_len[robots, None] - 1)
        pts = self.path[robots[:, None], ahead]
        reach = np.maximum(self.params[robots, self.inflation_col], INSCRIBED_RADIUS) + CYLINDER_RADIUS
        dx, dy = pts[..., 0] - centres[:, 0, None], pts[..., 1] - centres[:, 1, None]
        near = (dx * dx + dy * dy).min(axis=1) < reach**2
        self.stale[robots[near]] = True

    def _under_footprint(self, idx: np.ndarray) -> np.ndarray:
        """Which cylinders ``[len(idx), K]`` of robots ``idx`` the obstacle layer's footprint clearing wipes: those
        whose centre lies within ``FOOTPRINT_CLEARING`` of the padded footprint rectangle."""
        dx = self.marked[idx, :, 0] - self.pose[idx, 0, None]
        dy = self.marked[idx, :, 1] - self.pose[idx, 1, None]
        c, s = np.cos(self.pose[idx, 2])[:, None], np.sin(self.pose[idx, 2])[:, None]
        qx = np.maximum(np.abs(c * dx + s * dy) - FOOTPRINT_HALF[0], 0.0)
        qy = np.maximum(np.abs(c * dy - s * dx) - FOOTPRINT_HALF[1], 0.0)
        return qx * qx + qy * qy < FOOTPRINT_CLEARING**2

    def _nearest_clearance(self, idx: np.ndarray) -> np.ndarray:
        """Distance (m, uncapped) from robots ``idx`` to the nearest seen cylinder's surface ``[len(idx)]``: measured
        after each scan, then lowered by the distance moved since (a bound)."""
        fresh = idx[np.isnan(self._clearance[idx, 0])]
        if fresh.size:
            c = self.marked[fresh]
            dx, dy = c[..., 0] - self.pose[fresh, 0, None], c[..., 1] - self.pose[fresh, 1, None]
            nearest = np.sqrt(np.where(self.seen[fresh], dx * dx + dy * dy, np.inf).min(axis=1)) - CYLINDER_RADIUS
            self._clearance[fresh] = np.stack([nearest, self.pose[fresh, 0], self.pose[fresh, 1]], axis=1)
        at = self._clearance[idx]
        clearance = at[:, 0] - np.hypot(self.pose[idx, 0] - at[:, 1], self.pose[idx, 1] - at[:, 2])
        return clearance.astype(np.float32)
