"""720-beam, 270 degree planar laser, batched: sphere tracing on the distance field + exact circle refinement."""

from __future__ import annotations

import numpy as np

from envs.maps import TRUE_RES, TRUE_SHAPE, X0, Y0
from envs.worlds import CYLINDER_RADIUS

N_BEAMS = 720
FOV = 1.5 * np.pi
BEAM_ANGLES = (np.linspace(-FOV / 2, FOV / 2, N_BEAMS)).astype(np.float32)
"""Beam angles in the robot frame (rad), right to left, as a Hokuyo scan."""
RANGE_MAX = 5.0
"""Beams that hit nothing within this range (m) return ``inf``."""
_ITERATIONS = 80
_HIT = 0.01
# Nearest-cell lookups can over-estimate the distance by half a cell diagonal: step a little less.
_MARGIN = TRUE_RES * 0.71


def scan(
    pose: np.ndarray,
    env: np.ndarray,
    dist: np.ndarray,
    owner: np.ndarray,
    cylinders: np.ndarray,
    angles: np.ndarray = BEAM_ANGLES,
) -> tuple[np.ndarray, np.ndarray]:
    """Laser ranges from poses ``[S, 3]`` in world slots ``env [S]``.

    Each beam marches by the (conservative) distance-field value; when it reaches a cell whose centre lies in a
    cylinder, the exact ray/circle intersection with that cylinder decides: a root is the return, no root means the
    beam only grazed it and marches on. Finished beams leave the working set, so the cost follows the hard beams.

    :param dist: Truth distance grids ``[N, H, W]``; ``owner``: nearest-cylinder grids ``[N, H, W]``.
    :param cylinders: Cylinder centres ``[N, K, 2]``.
    :param angles: Beam angles ``[B]`` (rad, robot frame).
    :return: ranges ``[S, B]`` float32 (m, ``inf`` for no return) and the id of the cylinder each beam hit
        ``[S, B]`` int32 (-1 for no return).
    """
    n, b = pose.shape[0], angles.shape[0]
    heading = (pose[:, 2, None] + angles[None, :]).ravel()
    ux, uy = np.cos(heading).astype(np.float32), np.sin(heading).astype(np.float32)
    ox, oy = np.repeat(pose[:, 0], b), np.repeat(pose[:, 1], b)
    env = np.repeat(env, b)
    cell_offset = env * (TRUE_SHAPE[0] * TRUE_SHAPE[1])
    dist_flat, owner_flat = dist.reshape(-1), owner.reshape(-1)
    t = np.zeros(n * b, dtype=np.float32)
    ranges = np.full(n * b, np.inf, dtype=np.float32)
    hit_id = np.full(n * b, -1, dtype=np.int32)
    active = np.arange(n * b)
    for _ in range(_ITERATIONS):
        if active.size == 0:
            break
        ta = t[active]
        px, py = ox[active] + ta * ux[active], oy[active] + ta * uy[active]
        ix = np.minimum(np.maximum(((px - X0) * (1 / TRUE_RES)).astype(np.int32), 0), TRUE_SHAPE[1] - 1)
        iy = np.minimum(np.maximum(((py - Y0) * (1 / TRUE_RES)).astype(np.int32), 0), TRUE_SHAPE[0] - 1)
        cell = cell_offset[active] + iy * TRUE_SHAPE[1] + ix
        d = dist_flat[cell]
        done = ta >= RANGE_MAX
        inside = np.flatnonzero(d <= 0)
        if inside.size:
            rays = active[inside]
            k = owner_flat[cell[inside]]
            c = cylinders[env[rays], k]
            fx, fy = ox[rays] - c[:, 0], oy[rays] - c[:, 1]
            half_b = fx * ux[rays] + fy * uy[rays]
            disc = half_b**2 - (fx**2 + fy**2 - CYLINDER_RADIUS**2)
            root = -half_b - np.sqrt(np.maximum(disc, 0.0))
            exact = (disc >= 0) & (root >= 0)
            ranges[rays[exact]] = root[exact]
            hit_id[rays[exact]] = k[exact]
            done[inside[exact]] = True
        t[active] = ta + np.where(d > _MARGIN + _HIT, d - _MARGIN, _HIT)
        active = active[~done]
    too_far = ranges > RANGE_MAX
    ranges[too_far], hit_id[too_far] = np.inf, -1
    return ranges.reshape(n, b), hit_id.reshape(n, b)
