"""Observations of the VLM extractor: validate its space; split a batch into images and velocity; image scaling."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.preprocessing import is_image_space

__all__ = ["ObsType", "as_float", "check_space", "image_subspace", "split"]

ObsType = th.Tensor | Mapping[str, th.Tensor]


def split(observations: ObsType) -> tuple[th.Tensor, th.Tensor | None]:
    """Images as given and velocity ``[B, 2]`` or None."""
    if isinstance(observations, Mapping):
        return observations["image"], observations.get("velocity")
    return observations, None


def as_float(images: th.Tensor) -> th.Tensor:
    """uint8 -> float / 255; float images must already be in [0, 1]."""
    if images.dtype == th.uint8:
        return images.float() / 255.0
    if images.numel() and float(images.max()) > 1.0:
        raise ValueError(
            "VLMDPTExtractor expects uint8 images or float images in [0, 1] (SB3 normalize_images=True), "
            f"got float values up to {float(images.max()):.1f}"
        )
    return images


def image_subspace(observation_space: spaces.Space) -> spaces.Space:
    return observation_space["image"] if isinstance(observation_space, spaces.Dict) else observation_space


def check_space(observation_space: spaces.Space) -> bool:
    """Validate the observation space; return whether it carries a velocity."""
    image_space, has_velocity = observation_space, False
    if isinstance(observation_space, spaces.Dict):
        if "image" not in observation_space.spaces:
            raise ValueError(f"VLMDPTExtractor: Dict observation needs an 'image' key, got {list(observation_space)}")
        image_space = observation_space["image"]
        velocity = observation_space.spaces.get("velocity")
        if velocity is not None and (not isinstance(velocity, spaces.Box) or velocity.shape != (2,)):
            raise ValueError(f"VLMDPTExtractor: 'velocity' must be a Box of shape (2,), got {velocity}")
        has_velocity = velocity is not None
    if not isinstance(image_space, spaces.Box) or len(image_space.shape) != 3:
        raise TypeError(f"VLMDPTExtractor needs an image Box observation [3, H, W], got {image_space}")
    if not is_image_space(image_space, check_channels=True, normalized_image=image_space.dtype != np.uint8):
        raise ValueError(f"VLMDPTExtractor: {image_space} is not an image space")
    if image_space.shape[0] != 3:
        raise ValueError(
            "VLMDPTExtractor needs channel-first RGB images [3, H, W] (SB3's VecTransposeImage), "
            f"got {image_space.shape}"
        )
    return has_velocity
