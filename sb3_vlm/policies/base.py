"""What every loaded policy is: :class:`LoadedPolicy` (``predict`` in physical units, ``act`` for BarnNav
observations), fixed parameters, and SB3 models/policies."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch as th
from gymnasium import spaces

__all__ = ["FixedParams", "LoadedPolicy", "ParamTableLike", "SB3Policy"]


class ParamTableLike(Protocol):
    """What the loader needs of a planner parameter table (e.g. ``envs.planners.DWA_PARAMS``)."""

    names: tuple[str, ...]
    low: np.ndarray
    high: np.ndarray
    default: np.ndarray


class LoadedPolicy:
    """
    A policy of any format. Subclasses implement :meth:`predict`.

    :param name: Label in tables and plots.
    :param kind: ``"dwa"``, ``"applr"``, ``"sb3"``, ``"actor"`` or ``"sft"``.
    :param observation: ``"laser"`` or ``"costmap"``: what ``predict`` takes.
    :param names: Name of each output.
    :param env_kwargs: BarnNav settings the policy was made for (``time_step``, ``image_size``, ``velocity``, ...).
    """

    def __init__(
        self, name: str, kind: str, observation: str, names: Sequence[str], env_kwargs: Mapping[str, Any] | None = None
    ):
        self.name, self.kind, self.observation = name, kind, observation
        self.names = tuple(names)
        self.env_kwargs = dict(env_kwargs or {})

    def predict(
        self,
        observation: Any,
        velocity: Any = None,
        history: Sequence[Sequence[Any] | None] | None = None,
        deterministic: bool = True,
    ) -> np.ndarray:
        """
        Planner parameters in physical units.

        :param observation: Laser ``[B, 721]`` / ``[721]``, or costmap images ``[B, H, W, 3]`` / ``[H, W, 3]`` uint8
            (channel-first tensors ``[B, 3, H, W]`` too), or a Dict ``{"image", "velocity"}`` of those.
        :param velocity: ``[B, 2]`` / ``[2]`` robot velocity ``[v (m/s), w (rad/s)]``, or None (zeros).
        :param history: Per image its earlier frames (newest first) for a history encoder, or None (current frame
            repeated).
        :param deterministic: False adds the policy's exploration noise (actor policies with ``noise_std > 0``).
        :return: ``[B, P]`` float64, or ``[P]`` for an unbatched observation.
        """
        raise NotImplementedError

    def act(self, obs: Any, params: ParamTableLike | None = None) -> np.ndarray:
        """
        Parameters for a batch of BarnNav observations: ``predict``, cut to ``params``' length (an SFT head's extra
        velocity outputs dropped) and clipped to its ranges.
        """
        out = self.predict(obs)
        if params is None:
            return out
        return np.clip(out[:, : len(params.names)], params.low, params.high)


class FixedParams(LoadedPolicy):
    """The same parameters for every observation (``dwa`` / ``dwa:k=v,...``)."""

    def __init__(self, name: str, values: np.ndarray, names: Sequence[str]):
        super().__init__(name, "dwa", "laser", names)
        self.values = np.asarray(values, dtype=np.float64)

    def predict(self, observation, velocity=None, history=None, deterministic=True) -> np.ndarray:  # noqa: D102
        batch, batched = _batch_size(observation, self.observation)
        out = np.tile(self.values, (batch, 1))
        return out if batched else out[0]


class SB3Policy(LoadedPolicy):
    """An SB3 model or policy (``TD3`` zip, ``VLMTD3`` zip, the published APPLR actor): SB3's ``predict``."""

    def __init__(self, name: str, kind: str, model: Any, observation: str, names: Sequence[str], env_kwargs=None):
        super().__init__(name, kind, observation, names, env_kwargs)
        self.model = model
        space = model.observation_space
        image = space["image"] if isinstance(space, spaces.Dict) else space
        self.input_size: tuple[int, int] | None = None
        if observation == "costmap" and len(image.shape) == 3:
            h, w = image.shape[1:] if image.shape[0] == 3 else image.shape[:2]
            self.input_size = (int(h), int(w))
        """``(height, width)`` of the images the model takes (channel-first, as SB3 stores image spaces)."""

    def predict(self, observation, velocity=None, history=None, deterministic=True) -> np.ndarray:  # noqa: D102
        if history is not None:
            raise ValueError(f"policy {self.name!r} ({self.kind}) takes no history frames, got some")
        space = self.model.observation_space
        if isinstance(space, spaces.Dict) and not isinstance(observation, Mapping):
            observation = {"image": observation, "velocity": _velocity(velocity, observation, space["image"])}
        elif isinstance(observation, Mapping) and not isinstance(space, spaces.Dict):
            observation = observation["image"]
        action, _ = self.model.predict(observation, deterministic=deterministic)
        return np.asarray(action, dtype=np.float64)


def _batch_size(observation: Any, kind: str) -> tuple[int, bool]:
    """Batch size of an observation and whether it was batched."""
    if isinstance(observation, Mapping):
        observation = observation["image"]
    ndim = np.ndim(observation)
    batched = ndim == (2 if kind == "laser" else 4)
    return (len(observation) if batched else 1), batched


def _channels_first(images: Any) -> th.Tensor:
    """``[B, H, W, 3]`` (numpy or tensor) or ``[B, 3, H, W]`` -> a ``[B, 3, H, W]`` tensor (dtype kept)."""
    tensor = images if isinstance(images, th.Tensor) else th.from_numpy(np.array(images))  # a copy: may be read-only
    if tensor.shape[1] != 3 and tensor.shape[-1] == 3:
        tensor = tensor.permute(0, 3, 1, 2).contiguous()
    return tensor


def _velocity(velocity: Any, images: Any, image_space: spaces.Space | None) -> np.ndarray:
    """The given velocity, or zeros ``[B, 2]`` (``[2]`` for one unbatched image)."""
    if velocity is not None:
        return np.asarray(velocity, dtype=np.float32)
    batched = np.ndim(images) == 4
    return np.zeros((len(images), 2) if batched else (2,), dtype=np.float32)
