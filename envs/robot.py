"""Jackal-like differential-drive robot: footprint, velocity response, kinematics and collision, batched.

All functions take arrays over N robots. Poses are ``[N, 3]`` (x m, y m, heading rad), velocities ``[N, 2]``
(v m/s, w rad/s).
"""

from __future__ import annotations

import numpy as np

from envs.maps import TRUE_RES, TRUE_SHAPE, X0, Y0
from envs.worlds import CYLINDER_RADIUS

LENGTH, WIDTH = 0.458, 0.416
"""Jackal hull including the wheels (m): the collision shape. BARN counts any contact of the model, wheels too."""
ACC_LINEAR, ACC_ANGULAR = 3.0, 6.0
"""Velocity response of the base (m/s^2, rad/s^2): commands are tracked under these acceleration limits."""
MAX_LATERAL_ACC = 4.9
"""Centripetal acceleration the tyres can hold (m/s^2): mu g with the Jackal's wheel friction 0.5 (ODE takes the
smaller of the wheel's and the ground's coefficient). A sharper turn at speed yaws less than commanded."""
SLIP_STIFFNESS = 2.0
"""Cornering stiffness of the skid-steer base as an acceleration (m/s^2): in a turn the body slides outward at a slip
angle ``centripetal acceleration / SLIP_STIFFNESS`` (rad, the tyres' linear regime), so its lateral velocity grows as
speed^2 x turn rate. Neither the odometry nor the DWA's rollouts know of it."""
CONTROL_DT = 0.05
"""move_base controller period (s): 20 Hz."""


def _outline(length: float, width: float, spacing: float) -> np.ndarray:
    """Points ``[n, 2]`` (robot frame) along a centred rectangle's outline, at most ``spacing`` apart."""
    nx, ny = int(np.ceil(length / spacing)) + 1, int(np.ceil(width / spacing)) + 1
    xs, ys = np.linspace(-length / 2, length / 2, nx), np.linspace(-width / 2, width / 2, ny)
    pts = np.concatenate(
        [np.stack([xs, np.full(nx, y)], 1) for y in (-width / 2, width / 2)]
        + [np.stack([np.full(ny - 2, x), ys[1:-1]], 1) for x in (-length / 2, length / 2)]
    )
    return pts.astype(np.float32)


FOOTPRINT_OUTLINE = _outline(LENGTH, WIDTH, 0.04)
"""Collision sample points on the body outline (robot frame); a cylinder (0.15 m wide) cannot slip between them."""
_REACH = float(np.hypot(LENGTH, WIDTH)) / 2 + 0.05
"""Centre distance (m) beyond which no cylinder can touch the body (circumradius + a nearest-cell margin)."""


def track_velocity(vel: np.ndarray, cmd: np.ndarray, dt: float = CONTROL_DT) -> np.ndarray:
    """Velocity ``[N, 2]`` after ``dt`` s of tracking command ``cmd [N, 2]`` under the acceleration limits."""
    step = np.array([ACC_LINEAR * dt, ACC_ANGULAR * dt], dtype=np.float32)
    return vel + np.clip(cmd - vel, -step, step)


def skid_steer(vel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Body motion of the skid-steer base for the velocity its wheels track ``[N, 2]`` (v m/s, w rad/s).

    :return: Body velocity ``[N, 2]`` (the yaw rate capped where the turn would need more centripetal acceleration
        than ``MAX_LATERAL_ACC``) and the outward lateral slip velocity ``[N]`` (m/s, robot frame +y = left).
    """
    v, w = vel[:, 0], vel[:, 1]
    w_max = MAX_LATERAL_ACC / np.maximum(np.abs(v), 1e-3)
    w_body = np.clip(w, -w_max, w_max)
    return np.stack([v, w_body], axis=1), -v * (v * w_body) / SLIP_STIFFNESS


def integrate(
    pose: np.ndarray, vel: np.ndarray, dt: float = CONTROL_DT, lateral: np.ndarray | float = 0.0
) -> np.ndarray:
    """Pose ``[N, 3]`` after ``dt`` s at constant velocity ``[N, 2]`` (exact arc), plus a lateral (robot-frame +y)
    velocity ``lateral`` (m/s, ``[N]`` or scalar) along the mid-step heading."""
    x, y, th = pose[:, 0], pose[:, 1], pose[:, 2]
    v, w = vel[:, 0], vel[:, 1]
    dth = w * dt
    # Chord of the arc: length v*dt*sinc(dth/2), direction th + dth/2 (exact for constant v, w).
    chord = v * dt * np.sinc(dth / (2 * np.pi))
    mid = th + dth / 2
    side = lateral * dt
    th_new = (th + dth + np.pi) % (2 * np.pi) - np.pi
    x_new = x + chord * np.cos(mid) - side * np.sin(mid)
    y_new = y + chord * np.sin(mid) + side * np.cos(mid)
    return np.stack([x_new, y_new, th_new], axis=1).astype(np.float32)


def to_world(pose: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Robot-frame points ``[P, 2]`` -> world points ``[N, P, 2]`` for poses ``[N, 3]``."""
    c, s = np.cos(pose[:, 2])[:, None], np.sin(pose[:, 2])[:, None]
    px, py = points[None, :, 0], points[None, :, 1]
    return np.stack([pose[:, 0, None] + c * px - s * py, pose[:, 1, None] + s * px + c * py], axis=-1)


def surface_distance(points: np.ndarray, env: np.ndarray, owner: np.ndarray, cylinders: np.ndarray) -> np.ndarray:
    """Exact distance (m) from world points ``[S, P, 2]`` to the nearest cylinder surface (negative inside).

    :param env: World slot of each row of ``points`` ``[S]`` (index into ``owner`` and ``cylinders``).
    :param owner: Nearest-cylinder grids ``[N, H, W]`` (int) (truth resolution).
    :param cylinders: Cylinder centres ``[N, K, 2]``.
    """
    ix = np.minimum(np.maximum(((points[..., 0] - X0) / TRUE_RES).astype(np.int32), 0), TRUE_SHAPE[1] - 1)
    iy = np.minimum(np.maximum(((points[..., 1] - Y0) / TRUE_RES).astype(np.int32), 0), TRUE_SHAPE[0] - 1)
    k = np.take(owner, (env[:, None] * TRUE_SHAPE[0] + iy) * TRUE_SHAPE[1] + ix)
    centre = np.take(cylinders.reshape(-1, 2), env[:, None] * cylinders.shape[1] + k, axis=0)
    return np.hypot(points[..., 0] - centre[..., 0], points[..., 1] - centre[..., 1]) - CYLINDER_RADIUS


def in_collision(pose: np.ndarray, env: np.ndarray, owner: np.ndarray, cylinders: np.ndarray) -> np.ndarray:
    """Whether each body footprint ``[S]`` (poses ``[S, 3]`` in world slots ``env``) overlaps a cylinder."""
    hit = np.zeros(len(pose), dtype=bool)
    # Only bodies whose centre is within reach of a cylinder need the outline test.
    near = np.flatnonzero(surface_distance(pose[:, None, :2], env, owner, cylinders)[:, 0] < _REACH)
    if near.size:
        d = surface_distance(to_world(pose[near], FOOTPRINT_OUTLINE), env[near], owner, cylinders)
        hit[near] = np.any(d < 0.0, axis=1)
    return hit
