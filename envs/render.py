"""Images: the FTRL robot-frame scene (the VLM's observation) and a top-down view of a whole world.

FTRL scene (docs/compat/ftrl.md §5.6), scaled: 6 m x 4 m around the robot, 2 m behind to 4 m ahead and 2 m to each
side; robot frame +x (forward) -> image right, +y (left) -> image up; grey background, 1 m grid lines, red laser
points, black global path, green x axis and blue y axis (1 m), yellow robot box with a black outline drawn last.
Drawing is numpy only and batched over robots.
"""

from __future__ import annotations

import numpy as np

from envs.robot import LENGTH, WIDTH

SCENE_EXTENT = (-2.0, 4.0, -2.0, 2.0)
"""Robot-frame window of the scene image: x from -2 to 4 m, y from -2 to 2 m."""
DEFAULT_IMAGE_SIZE = (56, 84)
"""(H, W) of the costmap observation: FTRL's 2:3 aspect, sides multiples of 28 (6 Qwen2.5-VL image tokens),
14.1 KB per frame, so 200k transitions (obs + next_obs) take 5.3 GiB."""

BACKGROUND, GRID, LASER = (205, 205, 205), (120, 120, 120), (255, 0, 0)
PATH, X_AXIS, Y_AXIS, ROBOT, OUTLINE = (0, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 0, 0)


def _pixels(x: np.ndarray, y: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Robot-frame points (m) -> pixel rows, cols and an in-image mask."""
    h, w = size
    x0, x1, y0, y1 = SCENE_EXTENT
    col = np.floor((x - x0) / (x1 - x0) * w).astype(np.int64)
    row = np.floor((y1 - y) / (y1 - y0) * h).astype(np.int64)
    ok = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    return row, col, ok


def _static_layers(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Background with grid ``[H, W, 3]`` and the overlay (axes + robot) ``[H, W, 4]`` (RGB + alpha)."""
    h, w = size
    x0, x1, y0, y1 = SCENE_EXTENT
    base = np.empty((h, w, 3), dtype=np.uint8)
    base[:] = BACKGROUND
    for gx in np.arange(np.ceil(x0), x1 + 1e-6):
        _, col, _ = _pixels(np.array([gx]), np.array([0.0]), size)
        base[:, np.clip(col, 0, w - 1)] = GRID
    for gy in np.arange(np.ceil(y0), y1 + 1e-6):
        row, _, _ = _pixels(np.array([0.0]), np.array([gy]), size)
        base[np.clip(row, 0, h - 1), :] = GRID
    over = np.zeros((h, w, 4), dtype=np.uint8)
    px_per_m = w / (x1 - x0)
    half = max(0.5, 0.025 * px_per_m) / px_per_m  # axes 5 px wide at FTRL's 100 px/m, at least one pixel
    ys, xs = np.mgrid[0:h, 0:w]
    px = x0 + (xs + 0.5) / px_per_m
    py = y1 - (ys + 0.5) / px_per_m
    over[(px >= 0) & (px <= 1.0) & (np.abs(py) <= half)] = (*X_AXIS, 255)
    over[(py >= 0) & (py <= 1.0) & (np.abs(px) <= half)] = (*Y_AXIS, 255)
    body = (np.abs(px) <= LENGTH / 2) & (np.abs(py) <= WIDTH / 2)
    edge = max(1.0, 0.02 * px_per_m) / px_per_m
    inner = (np.abs(px) <= LENGTH / 2 - edge) & (np.abs(py) <= WIDTH / 2 - edge)
    over[body] = (*OUTLINE, 255)
    over[inner] = (*ROBOT, 255)
    return base, over


_LAYERS: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def costmap_images(
    ranges: np.ndarray,
    angles: np.ndarray,
    pose: np.ndarray,
    paths: list[np.ndarray],
    size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
) -> np.ndarray:
    """FTRL-style scene images of S robots.

    :param ranges: Laser ranges ``[S, B]`` (m, ``inf`` for no return).
    :param angles: Beam angles ``[B]`` (rad, robot frame).
    :param pose: Robot poses ``[S, 3]`` (world frame).
    :param paths: Global plan of each robot, ``[n_i, 2]`` world points (m).
    :param size: Image (H, W) in pixels.
    :return: uint8 ``[S, H, W, 3]`` RGB images.
    """
    if size not in _LAYERS:
        _LAYERS[size] = _static_layers(size)
    base, over = _LAYERS[size]
    s = ranges.shape[0]
    h, w = size
    images = np.broadcast_to(base, (s, h, w, 3)).copy()
    flat = images.reshape(-1, 3)
    finite = np.isfinite(ranges)
    r = np.where(finite, ranges, 0.0)
    row, col, ok = _pixels(r * np.cos(angles), r * np.sin(angles), size)
    ok &= finite
    env = np.broadcast_to(np.arange(s)[:, None], ranges.shape)
    flat[(env * h * w + row * w + col)[ok]] = LASER
    px_per_m = w / (SCENE_EXTENT[1] - SCENE_EXTENT[0])
    for i, path in enumerate(paths):
        if len(path) < 2:
            continue
        c, sn = np.cos(pose[i, 2]), np.sin(pose[i, 2])
        dx, dy = path[:, 0] - pose[i, 0], path[:, 1] - pose[i, 1]
        local = np.stack([c * dx + sn * dy, -sn * dx + c * dy], axis=1)
        seg = np.linalg.norm(np.diff(local, axis=0), axis=1)
        arc = np.concatenate([[0.0], np.cumsum(seg)])
        dense = np.arange(0.0, arc[-1], 0.5 / px_per_m)
        px = np.interp(dense, arc, local[:, 0])
        py = np.interp(dense, arc, local[:, 1])
        prow, pcol, pok = _pixels(px, py, size)
        images[i, prow[pok], pcol[pok]] = PATH
    mask = over[..., 3] > 0
    images[:, mask] = over[mask, :3]
    return images


def top_down(
    cylinders: np.ndarray,
    path: np.ndarray,
    pose: np.ndarray,
    trajectory: np.ndarray | None = None,
    known: np.ndarray | None = None,
    px_per_m: float = 20.0,
) -> np.ndarray:
    """Top-down RGB image of a world: obstacles (seen ones darker), reference/global path, trajectory, robot.

    :param cylinders: Cylinder centres ``[K, 2]`` (m). ``known``: bool ``[K]``, the ones the robot has seen.
    :param path: Path to draw ``[n, 2]`` (m). ``trajectory``: driven positions ``[t, 2]`` (m).
    :param pose: Robot pose ``[3]``.
    :return: uint8 ``[H, W, 3]`` covering x in [-5.5, 1], y in [-0.5, 14] m.
    """
    x0, x1, y0, y1 = -5.5, 1.0, -0.5, 14.0
    w, h = int((x1 - x0) * px_per_m), int((y1 - y0) * px_per_m)
    img = np.full((h, w, 3), 255, dtype=np.uint8)
    ys, xs = np.mgrid[0:h, 0:w]
    px, py = x0 + (xs + 0.5) / px_per_m, y1 - (ys + 0.5) / px_per_m

    def draw_points(pts: np.ndarray, color: tuple[int, int, int]) -> None:
        col = ((pts[:, 0] - x0) * px_per_m).astype(int)
        row = ((y1 - pts[:, 1]) * px_per_m).astype(int)
        ok = (col >= 0) & (col < w) & (row >= 0) & (row < h)
        img[row[ok], col[ok]] = color

    seen = np.zeros(len(cylinders), dtype=bool) if known is None else known
    for k, c in enumerate(cylinders):
        r0, r1 = int((y1 - c[1] - 0.1) * px_per_m), int((y1 - c[1] + 0.1) * px_per_m) + 1
        c0, c1 = int((c[0] - 0.1 - x0) * px_per_m), int((c[0] + 0.1 - x0) * px_per_m) + 1
        r0, c0 = max(r0, 0), max(c0, 0)
        inside = np.hypot(px[r0:r1, c0:c1] - c[0], py[r0:r1, c0:c1] - c[1]) <= 0.075
        img[r0:r1, c0:c1][inside] = (40, 40, 40) if seen[k] else (150, 150, 150)
    for pts, color in ((path, (0, 0, 0)), (trajectory, (30, 110, 255))):
        if pts is not None and len(pts) > 1:
            seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
            arc = np.concatenate([[0.0], np.cumsum(seg)])
            dense = np.arange(0.0, arc[-1], 0.5 / px_per_m)
            draw_points(np.stack([np.interp(dense, arc, pts[:, 0]), np.interp(dense, arc, pts[:, 1])], 1), color)
    c, s = np.cos(pose[2]), np.sin(pose[2])
    lx = c * (px - pose[0]) + s * (py - pose[1])
    ly = -s * (px - pose[0]) + c * (py - pose[1])
    img[(np.abs(lx) <= LENGTH / 2) & (np.abs(ly) <= WIDTH / 2)] = (255, 200, 0)
    return img
