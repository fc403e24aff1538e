"""Checkpoint directories as policies: a ``save_pretrained`` / hand-off directory (the TD3 actor) or an FTRL
supervised checkpoint (the SFT head), rebuilt from the files and the :class:`~sb3_vlm.model.config.VLMConfig` saved
with them."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces

from sb3_vlm._constants import ACTOR_HEAD_DIR, ADAPTER_CONFIG, POLICY_METADATA_KEY, VELOCITY_OUTPUTS
from sb3_vlm.flow.head import FlowMatchingHead
from sb3_vlm.flow.policy import FLOW_DIR
from sb3_vlm.formats.checkpoint import CheckpointError, read_checkpoint
from sb3_vlm.model.config import VLMConfig
from sb3_vlm.model.extractor import VLMDPTExtractor
from sb3_vlm.policies.base import LoadedPolicy, ParamTableLike, _channels_first, _velocity
from sb3_vlm.td3.policies import VLMTD3Policy

__all__ = ["MODES", "DirectoryOptions", "VLMDirectoryPolicy", "load_directory"]

logger = logging.getLogger(__name__)

MODES = ("sft", "actor", "flow")
# Observation image shape of a policy whose directory records none (only used to build the spaces; any size works).
_NOMINAL_IMAGE_SHAPE = (3, 56, 84)


@dataclass
class DirectoryOptions:
    """
    How to build a policy from a checkpoint directory (actor or SFT).

    :param mode: ``"actor"`` (TD3 actor of ``actor_head/``), ``"sft"`` (supervised head), ``"flow"`` (the
        flow-matching expert of ``flow_head/``), or None: actor when the directory has ``actor_head/``, else flow when
        it has ``flow_head/``, else sft.
    :param algorithm: Planner the policy serves (prompt name when the directory records none).
    :param base_model: Base model (``"tiny"`` or a local directory) if the checkpoint does not name it.
    :param use_velocity: Put the velocity into the prompt (tokenizer backbones); None: as recorded, else True (FTRL).
    :param input_size: ``(height, width)`` images are resized to (by the server); None: as recorded (actor), or none.
    :param dtype: Backbone dtype.
    :param quantization: ``"nf4"``, ``"int8"`` or None.
    :param vlm_image_size: ``(height, width)`` the VLM resizes to, overriding the recorded one.
    :param seed: Weight seed of the tiny backbone, if not recorded.
    :param params: Planner parameter table: output names and, in actor mode, the physical ranges (else those
        recorded by ``publish_policy``).
    """

    mode: str | None = None
    algorithm: str = "DWA"
    base_model: str | None = None
    use_velocity: bool | None = None
    input_size: tuple[int, int] | None = None
    dtype: str = "float32"
    quantization: str | None = None
    vlm_image_size: tuple[int, int] | None = None
    seed: int = 0
    params: ParamTableLike | None = None


class VLMDirectoryPolicy(LoadedPolicy):
    """
    A checkpoint directory: the extractor (and the TD3 policy in ``"actor"`` mode) plus how to read its outputs.

    :param extractor: Extractor holding the backbone, DPT head, history encoder and normalisation.
    :param policy: The TD3 policy (``"actor"`` mode), or None.
    :param checkpoint: Directory it was read from.
    :param use_velocity: Whether the velocity goes into the prompt (Dict observation).
    :param input_size: ``(height, width)`` incoming images should be resized to, or None.
    :param noise_std: Exploration noise std (in [-1, 1] action units) of ``predict(deterministic=False)``.
    :param flow_head: ``"flow"`` mode: the flow-matching expert on the extractor's feature (deterministic: its
        fixed noise, with its configured number of steps).
    """

    def __init__(
        self,
        name: str,
        mode: str,
        extractor: VLMDPTExtractor,
        policy: VLMTD3Policy | None,
        checkpoint: Path,
        names: Sequence[str],
        use_velocity: bool,
        input_size: tuple[int, int] | None,
        noise_std: float = 0.0,
        flow_head: FlowMatchingHead | None = None,
    ):
        env_kwargs: dict[str, Any] = {"velocity": use_velocity}
        if input_size is not None:
            env_kwargs["image_size"] = input_size
        super().__init__(name, mode, "costmap", names, env_kwargs)
        self.extractor, self.policy, self.checkpoint = extractor, policy, checkpoint
        self.use_velocity, self.input_size, self.noise_std = use_velocity, input_size, noise_std
        self.flow_head = flow_head
        self.rng = np.random.default_rng()

    @property
    def num_outputs(self) -> int:
        return len(self.names)

    @property
    def history_frames(self) -> int:
        """Frames ``T`` of the history encoder, 0 without one."""
        return 0 if self.extractor.history is None else self.extractor.history.num_frames

    @th.inference_mode()
    def infer(
        self, images: th.Tensor, velocity: th.Tensor, history: Sequence[Sequence[th.Tensor] | None] | None = None
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """
        :param images: ``[B, 3, H, W]`` uint8.
        :param velocity: ``[B, 2]`` float32 ``[v (m/s), w (rad/s)]``.
        :param history: Per image earlier frames (uint8 ``[3, h, w]``, newest first) or None; None: the current frame
            repeated (what TD3 training feeds).
        :return: ``"sft"`` / ``"flow"``: the de-normalised head outputs ``[B, P]`` float64 (physical units) and None;
            ``"actor"``: None and the deterministic action ``[B, A]`` float32 in [-1, 1] (see :meth:`to_physical`).
        """
        obs: th.Tensor | dict[str, th.Tensor] = {"image": images, "velocity": velocity} if self.use_velocity else images
        if self.extractor.history is None:
            history = None
        if self.flow_head is not None:
            actions = self.flow_head.act(self.extractor(obs, history))
            return self.extractor.denormalize(actions).double().numpy(), None
        if self.policy is None:
            return self.extractor.predict_parameters(obs, history).double().numpy(), None
        return None, self.policy.actor.mu(self.extractor(obs, history)).float().numpy()

    def to_physical(self, action: np.ndarray) -> np.ndarray:
        """Actor mode: ``[B, A]`` in [-1, 1] -> physical ``[B, A]`` float64 (SB3 ``unscale_action``)."""
        assert self.policy is not None
        return np.asarray(self.policy.unscale_action(action), dtype=np.float64)

    def explore(self, action: np.ndarray, noise_std: float, rng: np.random.Generator) -> np.ndarray:
        """Gaussian exploration noise in [-1, 1] action units, clipped (as SB3's TD3 collects)."""
        if noise_std <= 0:
            return action
        return np.clip(action + rng.normal(0.0, noise_std, size=action.shape).astype(np.float32), -1.0, 1.0)

    def predict(self, observation, velocity=None, history=None, deterministic=True) -> np.ndarray:  # noqa: D102
        if isinstance(observation, Mapping):
            observation, velocity = observation["image"], observation.get("velocity", velocity)
        batched = np.ndim(observation) == 4
        images = _channels_first(observation if batched else np.asarray(observation)[None])
        v = _velocity(velocity, images, None)
        v = th.as_tensor(np.asarray(v, dtype=np.float32).reshape(len(images), 2))
        frames = None
        if history is not None:
            frames = [None if h is None else [_channels_first(np.asarray(f)[None])[0] for f in h] for h in history]
        parameters, action = self.infer(images, v, frames)
        if action is not None:
            if not deterministic:
                action = self.explore(action, self.noise_std, self.rng)
            parameters = self.to_physical(action)
        assert parameters is not None
        return parameters if batched else parameters[0]


def load_directory(
    checkpoint: str | os.PathLike, options: DirectoryOptions, name: str | None = None
) -> VLMDirectoryPolicy:
    """A policy or supervised checkpoint directory (base model included); see :class:`DirectoryOptions`."""
    checkpoint = Path(checkpoint)
    ckpt = read_checkpoint(checkpoint)
    meta: dict[str, Any] = dict(ckpt.config.get(POLICY_METADATA_KEY) or {})
    recorded_kwargs: dict[str, Any] = dict(meta.get("policy_kwargs") or {})
    vlm = _vlm_config(checkpoint, ckpt.config, recorded_kwargs, options)
    has_flow = (checkpoint / FLOW_DIR).is_dir()
    mode = options.mode or ("actor" if ACTOR_HEAD_DIR in ckpt.extras else "flow" if has_flow else "sft")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES} or None, got {options.mode!r}")
    obs_meta = meta.get("observation_space") or {}
    use_velocity = options.use_velocity
    if use_velocity is None:
        use_velocity = bool(obs_meta.get("velocity", True))
    image_shape = tuple(obs_meta.get("image_shape") or _NOMINAL_IMAGE_SHAPE)
    input_size = options.input_size
    if input_size is None and mode == "actor" and obs_meta.get("image_shape"):
        input_size = (int(image_shape[1]), int(image_shape[2]))
    obs_space = _image_space(image_shape, use_velocity)

    flow_head = policy = None
    if mode in ("sft", "flow"):
        extractor = VLMDPTExtractor(obs_space, vlm)
        num_outputs = ckpt.num_params
        if mode == "flow":
            flow_head = _flow_head(checkpoint, has_flow)
            num_outputs = flow_head.config.action_dim
    else:
        policy = _actor_policy(checkpoint, ckpt.extras, options.params, meta, recorded_kwargs, obs_space, vlm)
        extractor = policy.features_extractor
        num_outputs = int(policy.action_space.shape[0])
    extractor.requires_grad_(False)
    extractor.train(False)
    names = _output_names(num_outputs, options.params, meta.get("parameter_names"))
    return VLMDirectoryPolicy(
        name or checkpoint.name,
        mode,
        extractor,
        policy,
        checkpoint,
        names,
        use_velocity,
        input_size,
        flow_head=flow_head,
    )


def _vlm_config(
    checkpoint: Path, config: Mapping[str, Any], recorded_kwargs: Mapping[str, Any], options: DirectoryOptions
) -> VLMConfig:
    """The extractor as it was trained (the VLMConfig saved with the checkpoint or recorded by publish_policy; older
    hand-offs recorded image_size/planner/seed only), then what serving changes."""
    recorded = dict(config.get("vlm") or recorded_kwargs.get("vlm") or {})
    for key in ("image_size", "planner", "seed"):
        if key in recorded_kwargs:
            recorded.setdefault(key, recorded_kwargs[key])
    recorded.setdefault("planner", options.algorithm)
    recorded.setdefault("seed", options.seed)
    return VLMConfig.build(
        recorded,
        backbone=str(checkpoint),
        base_model=options.base_model,  # None: the one the checkpoint names
        # Keep an adapter as separate LoRA modules (frozen below): /reload then swaps its weights in place.
        freeze_vlm=not (checkpoint / ADAPTER_CONFIG).is_file(),
        freeze_dpt=True,
        freeze_history=True,
        lora=None,
        dtype=options.dtype,
        quantization=options.quantization,
        image_size=_tuple_or_none(recorded.get("image_size"), options.vlm_image_size),
        feature_cache_bytes=0,
    )


def _flow_head(checkpoint: Path, has_flow: bool) -> FlowMatchingHead:
    """The flow-matching expert of ``flow_head/``, in eval mode."""
    if not has_flow:
        raise CheckpointError(f"{checkpoint}: no {FLOW_DIR}/ (mode='flow' needs `sb3-vlm pretrain --head flow`)")
    return FlowMatchingHead.from_pretrained(checkpoint / FLOW_DIR).eval()


def _actor_policy(
    checkpoint: Path,
    extras: Any,
    params: ParamTableLike | None,
    meta: Mapping[str, Any],
    recorded_kwargs: Mapping[str, Any],
    obs_space: spaces.Space,
    vlm: VLMConfig,
) -> VLMTD3Policy:
    """The TD3 policy of ``actor_head/`` with its recorded architecture, in eval mode."""
    if ACTOR_HEAD_DIR not in extras:
        raise CheckpointError(
            f"{checkpoint}: no {ACTOR_HEAD_DIR}/ (mode='actor' serves a directory written by "
            "VLMTD3Policy.save_pretrained or publish_policy; use mode='sft' for a supervised checkpoint)"
        )
    action_space = _action_space(checkpoint, params, meta.get("action_space"))
    policy_kwargs: dict[str, Any] = {}
    if "net_arch" in recorded_kwargs:
        policy_kwargs["net_arch"] = recorded_kwargs["net_arch"]
    if "activation_fn" in recorded_kwargs:
        policy_kwargs["activation_fn"] = getattr(th.nn, str(recorded_kwargs["activation_fn"]))
    if "n_critics" in recorded_kwargs:
        policy_kwargs["n_critics"] = int(recorded_kwargs["n_critics"])
    policy = VLMTD3Policy.from_pretrained(checkpoint, obs_space, action_space, vlm=vlm, **policy_kwargs)
    policy.set_training_mode(False)
    return policy


def _output_names(num_outputs: int, params: ParamTableLike | None, recorded: Sequence[str] | None) -> tuple[str, ...]:
    """Names of the outputs: the planner table's (+ FTRL's two velocities), the recorded ones, else ``param_<i>``."""
    if params is not None:
        names = tuple(params.names)
        if num_outputs == len(names) + len(VELOCITY_OUTPUTS):
            return names + VELOCITY_OUTPUTS
        if num_outputs == len(names):
            return names
        raise ValueError(
            f"the checkpoint predicts {num_outputs} values but the parameter table has {len(names)} "
            f"({', '.join(names)}); expected {len(names)} or {len(names) + 2} (with {', '.join(VELOCITY_OUTPUTS)})"
        )
    if recorded is not None and len(recorded) == num_outputs:
        return tuple(str(n) for n in recorded)
    return tuple(f"param_{i}" for i in range(num_outputs))


def _image_space(shape: Sequence[int], use_velocity: bool) -> spaces.Space:
    image = spaces.Box(0, 255, shape=tuple(int(s) for s in shape), dtype=np.uint8)
    if not use_velocity:
        return image
    return spaces.Dict({"image": image, "velocity": spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)})


def _tuple_or_none(recorded: Any, given: tuple[int, int] | None) -> tuple[int, int] | None:
    if given is not None:
        return (int(given[0]), int(given[1]))
    return None if recorded is None else (int(recorded[0]), int(recorded[1]))


def _action_space(checkpoint: Path, params: ParamTableLike | None, recorded: Mapping[str, Any] | None) -> spaces.Box:
    """Physical action ranges: the given planner table, else the ranges recorded by ``publish_policy``."""
    if params is not None:
        low, high = np.asarray(params.low, np.float32), np.asarray(params.high, np.float32)
        if recorded is not None and (
            len(recorded["low"]) != len(low)
            or not np.allclose(recorded["low"], low)
            or not np.allclose(recorded["high"], high)
        ):
            logger.warning(
                "%s: recorded action ranges differ from the given parameter table; using the table", checkpoint
            )
        return spaces.Box(low, high, dtype=np.float32)
    if recorded is None:
        raise ValueError(
            f"{checkpoint}: mode='actor' needs the physical parameter ranges: pass params=<planner table> "
            "(e.g. envs.planners.DWA_PARAMS) or publish the policy with sb3_vlm.serving.handoff.publish_policy, which "
            "records them"
        )
    return spaces.Box(np.asarray(recorded["low"], np.float32), np.asarray(recorded["high"], np.float32))
