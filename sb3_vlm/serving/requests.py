"""Decoding ``/infer`` requests: base64 strings, image files (size-limited), ``image_path`` inside the image roots.

Every failure is a :class:`RequestError` with the HTTP status the client gets (400, or 403 for a refused path).
"""

from __future__ import annotations

import base64
import binascii
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch as th
from PIL import Image, UnidentifiedImageError

from sb3_vlm.formats.trajectories import resize_image

__all__ = ["RequestError", "b64_bytes", "decode_image", "read_image_path"]


class RequestError(Exception):
    """A client error: answered with ``status_code`` and ``message``; the server keeps serving."""

    def __init__(self, status_code: int, message: str):
        super().__init__(message)
        self.status_code = status_code
        self.message = message


# ---------------------------------------------------------------------------------------------------------------- model


def b64_bytes(text: str, what: str) -> bytes:
    """Strict base64 -> bytes (400 otherwise)."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise RequestError(400, f"{what}: not valid base64 ({e})") from e


def read_image_path(path: str, roots: Sequence[Path]) -> bytes:
    """The bytes of ``path`` if its real path (symlinks resolved) lies inside one of ``roots`` (403 otherwise, and
    always without roots), 400 if it cannot be read."""
    if not roots:
        raise RequestError(
            403, "image_path is refused: this server has no image root (--image-root); send image_base64"
        )
    if "\x00" in path:
        raise RequestError(400, f"image_path {path!r}: a path cannot hold a NUL character")
    real = Path(os.path.realpath(path))
    if not any(real.is_relative_to(root) for root in roots):
        raise RequestError(403, f"image_path {path!r} is outside the server's image roots")
    try:
        with open(real, "rb") as f:
            return f.read()
    except OSError as e:
        raise RequestError(400, f"image_path {path!r}: cannot be read ({e.strerror or e})") from e


def decode_image(data: bytes, what: str, size: tuple[int, int] | None, max_pixels: int) -> th.Tensor:
    """Image file bytes -> uint8 ``[3, H, W]`` (RGB; resized to ``size`` if given); at most ``max_pixels`` pixels."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > max_pixels:
                raise RequestError(
                    400, f"{what}: {image.width}x{image.height} pixels is more than max_image_pixels ({max_pixels})"
                )
            image.load()
            array = resize_image(image, size) if size is not None else np.asarray(image.convert("RGB"))
    except RequestError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise RequestError(400, f"{what}: not a decodable image ({type(e).__name__}: {e})") from e
    return th.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
