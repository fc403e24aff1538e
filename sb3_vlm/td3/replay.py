"""Offline replay: transitions read from trajectory files (:mod:`sb3_vlm.formats.trajectories`) -> SB3 buffer."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.buffers import DictReplayBuffer, ReplayBuffer
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first

from sb3_vlm.formats.trajectories import LASER_DIM, LoadResult, Trajectory, Transition

__all__ = ["fill_replay_buffer"]


def _target_kind(space: spaces.Space, key: str | None) -> str:
    """Which transition observation part fills ``space``."""
    if key is not None:
        return key
    if is_image_space(space):
        return "image"
    if isinstance(space, spaces.Box) and space.shape == (LASER_DIM,):
        return "laser"
    if isinstance(space, spaces.Box) and space.shape == (2,):
        return "velocity"
    raise ValueError(
        f"fill_replay_buffer: cannot map observation space {space} to 'image' (uint8 image), "
        f"'laser' ({LASER_DIM},) or 'velocity' (2,)"
    )


def _convert(value: np.ndarray, space: spaces.Box, kind: str) -> np.ndarray:
    """Transition observation part -> the buffer's layout (channels-first images, space dtype)."""
    if kind == "image" and is_image_space(space) and is_image_space_channels_first(space):
        value = np.transpose(value, (2, 0, 1))
    if value.shape != space.shape:
        raise ValueError(
            f"fill_replay_buffer: observation '{kind}' has shape {value.shape}, the buffer expects {space.shape}"
            + (" (pass load_trajectories(image_size=...) matching the env's image)" if kind == "image" else "")
        )
    return value.astype(space.dtype, copy=False)


def fill_replay_buffer(
    model_or_buffer: OffPolicyAlgorithm | ReplayBuffer,
    data: LoadResult | Sequence[Trajectory] | Sequence[Transition],
    *,
    learning_starts: int | None = 0,
    delete_after_load: bool = False,
) -> int:
    """Add loaded transitions to an SB3 replay buffer, adapting them to its observation space.

    Image parts are transposed to channels-first when the buffer's space is (after ``VecTransposeImage``); a
    ``DictReplayBuffer`` is filled key by key (``image``, ``velocity``, ``laser``); a ``Box`` buffer takes the
    image, the (721,) laser or the (2,) velocity by its shape. With ``n_envs > 1`` transitions are added
    ``n_envs`` at a time; the last incomplete group is padded with transitions from the start of ``data``.

    :param model_or_buffer: An off-policy model (its ``replay_buffer`` is filled) or a buffer.
    :param data: What :func:`load_trajectories` returned, its trajectories, or transitions.
    :param learning_starts: With a model: value to set ``model.learning_starts`` to, so that ``learn()`` trains
        right away on the prefilled buffer (SB3 compares it to ``num_timesteps``, not to the buffer size);
        ``None`` leaves it unchanged.
    :param delete_after_load: Delete each trajectory file and its PNG frames once all transitions are in the
        buffer (needs trajectories, not bare transitions).
    :return: Number of transitions added (padding excluded).
    """
    buffer = getattr(model_or_buffer, "replay_buffer", model_or_buffer)
    if not isinstance(buffer, ReplayBuffer):
        raise TypeError(f"fill_replay_buffer needs an off-policy model or a (Dict)ReplayBuffer, got {type(buffer)}")
    trajectories, transitions = _unpack(data)
    if delete_after_load and trajectories is None and transitions:
        raise ValueError("fill_replay_buffer: delete_after_load needs trajectories (or a LoadResult), got transitions")
    if not transitions:
        return 0
    if transitions[0].action.shape != (buffer.action_dim,):
        raise ValueError(
            f"fill_replay_buffer: actions have shape {transitions[0].action.shape}, the buffer expects "
            f"({buffer.action_dim},)"
        )
    layout = _Layout(buffer)
    # Convert (mostly views) and check everything before the buffer changes.
    converted = [(layout(t.obs), layout(t.next_obs)) for t in transitions]
    _add(buffer, transitions, converted)
    if learning_starts is not None and isinstance(model_or_buffer, OffPolicyAlgorithm):
        model_or_buffer.learning_starts = learning_starts
    if delete_after_load:
        for traj in trajectories:
            for file in (traj.path, *traj.frames):
                file.unlink(missing_ok=True)
    return len(transitions)


def _unpack(
    data: LoadResult | Sequence[Trajectory] | Sequence[Transition],
) -> tuple[list[Trajectory] | None, list[Transition]]:
    """The trajectories of ``data`` (None for bare transitions) and all its transitions, in order."""
    if isinstance(data, LoadResult):
        trajectories: list[Trajectory] | None = data.trajectories
    elif len(data) > 0 and all(isinstance(d, Trajectory) for d in data):
        trajectories = list(data)
    else:
        trajectories = None
    transitions = [t for traj in trajectories for t in traj.transitions] if trajectories is not None else list(data)
    if not all(isinstance(t, Transition) for t in transitions):
        raise TypeError("fill_replay_buffer: data must be a LoadResult, trajectories or transitions")
    return trajectories, transitions


class _Layout:
    """A transition's observation parts in a buffer's layout: one array per key of a ``DictReplayBuffer`` (key
    None for a ``Box`` one)."""

    def __init__(self, buffer: ReplayBuffer):
        space = buffer.observation_space
        if isinstance(buffer, DictReplayBuffer):
            self.targets = {key: (sub, _target_kind(sub, key)) for key, sub in space.spaces.items()}
        else:
            self.targets = {None: (space, _target_kind(space, None))}

    def __call__(self, parts: dict[str, np.ndarray]) -> dict[str | None, np.ndarray]:
        missing = [kind for _sub, kind in self.targets.values() if kind not in parts]
        if missing:
            raise ValueError(
                f"fill_replay_buffer: the buffer needs observation {missing}, the transitions have {sorted(parts)}"
            )
        return {key: _convert(parts[kind], sub, kind) for key, (sub, kind) in self.targets.items()}


def _add(
    buffer: ReplayBuffer,
    transitions: list[Transition],
    converted: list[tuple[dict[str | None, np.ndarray], dict[str | None, np.ndarray]]],
) -> None:
    """Add the transitions ``n_envs`` at a time, the last group padded from the start (with a warning)."""
    n_envs = buffer.n_envs
    keys = list(converted[0][0])
    for start in range(0, len(transitions), n_envs):
        index = [(start + j) % len(transitions) for j in range(n_envs)]
        obs = {key: np.stack([converted[i][0][key] for i in index]) for key in keys}
        next_obs = {key: np.stack([converted[i][1][key] for i in index]) for key in keys}
        group = [transitions[i] for i in index]
        buffer.add(
            obs if isinstance(buffer, DictReplayBuffer) else obs[None],
            next_obs if isinstance(buffer, DictReplayBuffer) else next_obs[None],
            np.stack([t.action for t in group]),
            np.array([t.reward for t in group], dtype=np.float32),
            np.array([t.done for t in group], dtype=np.float32),
            [{"TimeLimit.truncated": t.timeout} for t in group],
        )
    if len(transitions) % n_envs:
        warnings.warn(
            f"fill_replay_buffer: {len(transitions)} transitions for {n_envs} envs; the last group was padded with "
            f"{n_envs - len(transitions) % n_envs} repeated transitions",
            stacklevel=3,
        )
