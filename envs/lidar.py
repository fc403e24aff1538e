"""720-beam, 270 degree planar laser, batched: exact ray/circle returns from each cylinder's angular interval.

Every obstacle is a cylinder, so a scan needs no ray marching: a cylinder at distance ``d`` and bearing ``phi``
covers the beams within ``asin(r / d)`` of ``phi``, and each of those beams meets it at an exact ray/circle root; the
nearest root per beam is the return. The loop over (robot, cylinder, beam) is compiled (numba).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from envs.worlds import CYLINDER_RADIUS

N_BEAMS = 720
FOV = 1.5 * np.pi
BEAM_ANGLES = (np.linspace(-FOV / 2, FOV / 2, N_BEAMS)).astype(np.float32)
"""Beam angles in the robot frame (rad), right to left, as a Hokuyo scan."""
RANGE_MAX = 5.0
"""Beams that hit nothing within this range (m) return ``inf``."""
_STEP = FOV / (N_BEAMS - 1)
_COS, _SIN = np.cos(BEAM_ANGLES).astype(np.float64), np.sin(BEAM_ANGLES).astype(np.float64)


def scan(pose: np.ndarray, cylinders: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Laser ranges of ``S`` robots, each among its own cylinders.

    :param pose: Laser poses ``[S, 3]`` (x m, y m, heading rad).
    :param cylinders: Cylinder centres ``[S, K, 2]`` (m) of each robot's world; padding rows placed far away.
    :return: ranges ``[S, 720]`` float32 (m, ``inf`` for no return within ``RANGE_MAX``) and the index of the
        cylinder each beam hit ``[S, 720]`` int32 (-1 for no return).
    """
    ranges = np.full((len(pose), N_BEAMS), np.inf, dtype=np.float32)
    hit_id = np.full((len(pose), N_BEAMS), -1, dtype=np.int32)
    _scan(pose, cylinders, ranges, hit_id)
    return ranges, hit_id


@njit(cache=True, nogil=True)
def _scan(pose: np.ndarray, cylinders: np.ndarray, ranges: np.ndarray, hit_id: np.ndarray) -> None:
    """:func:`scan` into ``ranges`` and ``hit_id`` (filled with ``inf`` and -1), computed in float64."""
    for s in range(pose.shape[0]):
        x, y, heading = np.float64(pose[s, 0]), np.float64(pose[s, 1]), np.float64(pose[s, 2])
        c, sn = np.cos(heading), np.sin(heading)
        for k in range(cylinders.shape[1]):
            gx, gy = np.float64(cylinders[s, k, 0]) - x, np.float64(cylinders[s, k, 1]) - y
            d2 = gx * gx + gy * gy
            # Cylinders in reach; a robot inside a cylinder (only possible after a collision) sees nothing of it.
            if not (CYLINDER_RADIUS**2 < d2 < (RANGE_MAX + CYLINDER_RADIUS) ** 2):
                continue
            rx, ry = c * gx + sn * gy, c * gy - sn * gx  # centre in the laser frame
            half, bearing = np.arcsin(CYLINDER_RADIUS / np.sqrt(d2)), np.arctan2(ry, rx)
            lo = max(int(np.ceil((bearing - half + FOV / 2) / _STEP)), 0)
            hi = min(int(np.floor((bearing + half + FOV / 2) / _STEP)), N_BEAMS - 1)
            for beam in range(lo, hi + 1):
                along = rx * _COS[beam] + ry * _SIN[beam]  # distance along the beam to the point nearest the centre
                disc = along * along - (d2 - CYLINDER_RADIUS**2)
                if disc < 0:
                    continue
                root = along - np.sqrt(disc)
                if root <= RANGE_MAX and root < ranges[s, beam]:
                    ranges[s, beam] = root
                    hit_id[s, beam] = k
