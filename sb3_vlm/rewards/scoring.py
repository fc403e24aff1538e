"""What the judge sends and reads back: frame sampling, image encoding, the prompt and the score parser.

Pure functions without the ``openai`` package, so they are usable (and tested) on their own.
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
import re
from collections.abc import Sequence

import numpy as np
from PIL import Image

__all__ = [
    "DEFAULT_PROMPT",
    "DEFAULT_TASK",
    "encode_image",
    "frames_key",
    "parse_score",
    "render_prompt",
    "sample_frames",
    "to_rgb_uint8",
]

DEFAULT_TASK = (
    "Drive the robot from its start to the goal without touching any obstacle, smoothly and without hesitating, "
    "the way a careful human driver would."
)
"""Task description put into the prompt when the user gives none."""

DEFAULT_PROMPT = (
    "You are judging a mobile robot's navigation. The {num_frames} images are frames of one run, in time order.\n"
    "Task: {task}\n"
    "Rate how well the robot performs the task, from {low:g} (worst) to {high:g} (best).\n"
    "End your answer with one line of the form: [SCORE] <number>"
)
"""Prompt template; fields ``{task}``, ``{num_frames}`` (frames actually sent), ``{low}`` and ``{high}`` (the score
range)."""

_NUMBER = r"([-+]?(?:\d+(?:\.\d*)?|\.\d+))"
# "[SCORE] 7", "[SCORE]: 7.5", "[score] = 7", "**[SCORE]** 7", optionally "[SCORE] 7/10"
_TAGGED = re.compile(r"\[\s*score\s*\]\**\s*[:=]?\s*\**\s*" + _NUMBER + r"(?:\s*/\s*" + _NUMBER + r")?", re.IGNORECASE)
# "7/10", "7 / 10", "7 out of 10"
_FRACTION = re.compile(_NUMBER + r"\s*(?:/|out\s+of)\s*" + _NUMBER, re.IGNORECASE)
_BARE = re.compile(r"^\s*" + _NUMBER + r"\s*\.?\s*$")


def parse_score(text: str | None, low: float = 0.0, high: float = 10.0) -> float | None:
    """The score of a judge's answer, clipped to ``[low, high]``; None when the answer holds none.

    Formats, first match wins, the last occurrence in the text counts (a model may restate the format first):

    1. ``[SCORE] x``, ``[SCORE]: x``, ``[SCORE] = x`` (any case, markdown bold allowed): ``x`` in score units;
       ``[SCORE] x/d`` is read as a fraction, as in 2.
    2. ``x/d`` or ``x out of d`` (``d > 0``): the fraction ``x/d`` of the range, ``low + (high - low) * x / d``
       (so ``7/10`` is 7 on the default 0..10 range and 0.7 on a 0..1 range).
    3. The whole answer is a bare number: score units.

    :param text: The answer (``message.content``; None is unparsable).
    :param low: Lowest score (score units).
    :param high: Highest score.
    :return: The clipped score, or None.
    """
    if not text:
        return None
    value: float | None = None
    tagged = list(_TAGGED.finditer(text))
    if tagged:
        x, d = tagged[-1].groups()
        value = _fraction(float(x), float(d), low, high) if d is not None else float(x)
    else:
        fractions = list(_FRACTION.finditer(text))
        if fractions:
            x, d = fractions[-1].groups()
            value = _fraction(float(x), float(d), low, high)
        elif bare := _BARE.match(text):
            value = float(bare.group(1))
    if value is None or not math.isfinite(value):
        return None
    return float(min(max(value, low), high))


def _fraction(x: float, d: float, low: float, high: float) -> float:
    return low + (high - low) * x / d if d > 0 else math.nan


def sample_frames(frames: Sequence[np.ndarray], num_frames: int) -> list[np.ndarray]:
    """``num_frames`` frames spread evenly over ``frames`` (first and last included); all of them if fewer.

    :param frames: Images in time order.
    :param num_frames: How many to keep (> 0).
    """
    if len(frames) <= num_frames:
        return list(frames)
    idx = np.linspace(0, len(frames) - 1, num_frames).round().astype(np.int64)
    return [frames[i] for i in idx]


def to_rgb_uint8(frame: np.ndarray) -> np.ndarray:
    """An RGB uint8 ``[H, W, 3]`` image from ``[H, W, 3]``, ``[3, H, W]`` (channels first), ``[H, W]`` (grey) or
    ``[H, W, 4]`` (alpha dropped); float images are taken as 0..1.

    :raises ValueError: for any other shape.
    """
    a = np.asarray(frame)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[2] not in (1, 3, 4):
        a = np.transpose(a, (1, 2, 0))
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ValueError(f"a frame must be an image [H, W, 3], [3, H, W] or [H, W], got shape {np.shape(frame)}")
    a = a[..., :3]
    if a.dtype != np.uint8:
        a = np.clip(np.asarray(a, dtype=np.float64) * 255.0, 0, 255).round().astype(np.uint8)
    return np.ascontiguousarray(a)


def encode_image(frame: np.ndarray, image_size: tuple[int, int] | None, image_format: str, quality: int = 90) -> str:
    """A ``data:`` URL of one frame, resized to ``image_size`` ``(H, W)`` (None: as is), PNG or JPEG.

    :return: ``"data:image/png;base64,..."`` or ``"data:image/jpeg;base64,..."``.
    """
    image = Image.fromarray(to_rgb_uint8(frame))
    if image_size is not None and (image.height, image.width) != tuple(image_size):
        image = image.resize((image_size[1], image_size[0]), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    if image_format == "jpeg":
        image.save(buffer, format="JPEG", quality=quality)
    else:
        image.save(buffer, format="PNG")
    return f"data:image/{image_format};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def render_prompt(template: str, task: str, num_frames: int, low: float, high: float) -> str:
    """The prompt text: ``template`` with its fields filled (see :data:`DEFAULT_PROMPT`).

    :raises ValueError: for a template with other fields or bad braces.
    """
    try:
        return template.format(task=task, num_frames=num_frames, low=low, high=high)
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(
            f"prompt_template may use {{task}}, {{num_frames}}, {{low}} and {{high}} only (double other braces), "
            f"got an error {e!r}"
        ) from e


def frames_key(request: str, frames: Sequence[np.ndarray]) -> str:
    """SHA-256 of a request's settings (``request``: model, prompt, sampling, image options) and its frames' pixels;
    equal keys mean equal requests, so an answer can be reused."""
    h = hashlib.sha256(request.encode())
    for frame in frames:
        a = np.ascontiguousarray(frame)
        h.update(f"|{a.dtype.str}{a.shape}|".encode())
        h.update(a.data)
    return h.hexdigest()
