"""Model inputs of the backbone: FTRL's prompts, the batched Qwen2-VL image patchify, token-row padding."""

from __future__ import annotations

import torch as th
import torch.nn.functional as F
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

__all__ = ["FTRL_SYSTEM_PROMPT", "FTRL_USER_PROMPT", "FTRL_USER_PROMPT_NO_VELOCITY", "patchify", "right_pad"]

# OpenAI CLIP statistics, the Qwen2-VL image processor's defaults.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Qwen2-VL image processor defaults: min 56*56 and max 28*28*1280 pixels.
MIN_PIXELS = 56 * 56
MAX_PIXELS = 28 * 28 * 1280
NUM_TAPS = 4

FTRL_SYSTEM_PROMPT = """You are a navigation scene analyzer for Clearpath Jackal robot motion planning.
Scene Representation (Costmap Visualization):
- Scale: Each grid cell represents approximately 1 meter.
- Robot: Yellow square (0.508 m x 0.430 m footprint)
- Green arrow: forward driving direction (x-axis)
- Blue line: lateral direction (y-axis)
- Obstacles: Red points from laser scanner measurements
- Global Path: Black curve showing a kinematic reference trajectory that guides direction but does not encode \
dynamics or feasibility.
- Background: Grey grid is for visualization only and has no obstacle or cost meaning.
Your Role:
Analyze the spatial layout to understand:
- Obstacle distribution and density around the robot
- Available free space and safe clearance margins
- Path geometry (straight corridor, sharp turn, narrow passage)
- Motion feasibility given the current velocity state

Your navigation reasoning will be used downstream to select parameters for the local motion planner."""

FTRL_USER_PROMPT = """Current robot state:
- Linear velocity: {linear_vel:.3f} m/s
- Angular velocity: {angular_vel:.3f} rad/s

Target local planner: {algorithm}

Use the scene image and robot state to perform navigation reasoning about obstacle proximity, path curvature, \
free-space structure, and motion constraints."""

FTRL_USER_PROMPT_NO_VELOCITY = """Target local planner: {algorithm}

Analyze the costmap to understand obstacle distribution and path geometry."""


def patchify(
    images: th.Tensor,
    size: tuple[int, int] | None = None,
    patch_size: int = 14,
    merge_size: int = 2,
    temporal_patch_size: int = 2,
) -> tuple[th.Tensor, th.Tensor]:
    """
    Batched tensor version of the Qwen2-VL image processor (rescale, CLIP normalisation, patch flattening).

    Matches ``Qwen2VLImageProcessorPil`` exactly when both sides are multiples of ``patch_size * merge_size`` (28);
    other sizes are resized (bicubic, antialiased) to ``size`` or to the processor's ``smart_resize`` size, which is
    close to, not identical with, PIL's resampling.

    :param images: ``[B, 3, H, W]``, uint8 in [0, 255] or float in [0, 1].
    :param size: Target ``(height, width)``, multiples of 28; None keeps the processor's size rule.
    :return: ``pixel_values [B * gh * gw, 3 * temporal_patch_size * patch_size**2]`` float32 and
        ``image_grid_thw [B, 3]`` long (``[1, gh, gw]`` per image).
    """
    if not isinstance(images, th.Tensor):
        raise TypeError(f"patchify expects a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"patchify expects images [B, 3, H, W], got shape {tuple(images.shape)}")
    factor = patch_size * merge_size
    b, c, h, w = images.shape
    if size is None:
        size = smart_resize(h, w, factor=factor, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    elif size[0] % factor or size[1] % factor:
        raise ValueError(f"patchify: size must be multiples of {factor}, got {size}")
    x = images.float() / 255.0 if images.dtype == th.uint8 else images.float()
    if tuple(size) != (h, w):
        x = F.interpolate(x, size=tuple(size), mode="bicubic", align_corners=False, antialias=True).clamp(0.0, 1.0)
    x = (x - x.new_tensor(CLIP_MEAN).view(1, 3, 1, 1)) / x.new_tensor(CLIP_STD).view(1, 3, 1, 1)
    gh, gw = size[0] // patch_size, size[1] // patch_size
    m, p = merge_size, patch_size
    x = x.reshape(b, c, gh // m, m, p, gw // m, m, p).permute(0, 2, 5, 3, 6, 1, 4, 7)  # B gh/m gw/m m m C p p
    x = x.unsqueeze(6).expand(*x.shape[:6], temporal_patch_size, p, p)  # a still image repeats over time
    pixel_values = x.reshape(b * gh * gw, c * temporal_patch_size * p * p)
    grid = th.tensor([[1, gh, gw]], dtype=th.long, device=images.device).expand(b, 3)
    return pixel_values, grid


def right_pad(rows: list[list[int]], pad_id: int, device: th.device) -> tuple[th.Tensor, th.Tensor | None]:
    """Stack token rows, right-padding with ``pad_id``; the mask is None when no row needed padding."""
    length = max(len(r) for r in rows)
    ids = th.full((len(rows), length), pad_id, dtype=th.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = th.tensor(row, dtype=th.long)
    if all(len(r) == length for r in rows):
        return ids.to(device), None
    mask = th.zeros_like(ids)
    for i, row in enumerate(rows):
        mask[i, : len(row)] = 1
    return ids.to(device), mask.to(device)
