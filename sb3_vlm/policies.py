"""One loader for every policy format sb3-vlm reads: ``load_policy(spec)`` -> an object with ``predict``.

``spec`` is ``[name=]target``, where ``target`` is one of (recognised here and nowhere else):

* ``dwa`` (the planner's default parameters) or ``dwa:max_vel_x=2.0,inflation_radius=0.6`` (fixed parameters);
* a directory with APPLR's ``policy_actor`` (the published ros_jackal actor, read safely), or that file;
* an SB3 ``.zip`` (``TD3`` on the laser, ``VLMTD3`` on the costmap image);
* a directory written by ``VLMTD3Policy.save_pretrained`` / ``publish_policy`` (``actor_head/``: the TD3 actor);
* a supervised FTRL checkpoint (``regression_head/``: the SFT head's ``pred * std + mean``, as FTRL serves it).

Every loaded policy answers ``predict(observation, velocity=None, history=None, deterministic=True)`` with planner
parameters in physical units (``[B, P]``, or ``[P]`` for one unbatched observation), and ``act(obs)`` for a batch of
BarnNav observations (the env's ``P`` parameters, within their ranges). The server, the collector, eval/compare and
viz all load through here.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch as th
from gymnasium import spaces

from sb3_vlm._constants import (
    ACTOR_HEAD_DIR,
    ADAPTER_CONFIG,
    HEAD_DIR,
    POLICY_METADATA_KEY,
    RUN_CONFIG,
    VELOCITY_OUTPUTS,
)
from sb3_vlm.formats.applr import APPLR_ACTOR_FILE
from sb3_vlm.formats.checkpoint import CheckpointError, read_checkpoint
from sb3_vlm.formats.sb3_zip import load_algorithm
from sb3_vlm.model.config import VLMConfig
from sb3_vlm.model.extractor import VLMDPTExtractor
from sb3_vlm.td3.policies import VLMTD3Policy

__all__ = [
    "DirectoryOptions",
    "FixedParams",
    "LoadedPolicy",
    "ParamTableLike",
    "SB3Policy",
    "VLMDirectoryPolicy",
    "load_directory",
    "load_policy",
]

logger = logging.getLogger(__name__)

MODES = ("sft", "actor")
# Observation image shape of a policy whose directory records none (only used to build the spaces; any size works).
_NOMINAL_IMAGE_SHAPE = (3, 56, 84)
APPLR_ENV = {"time_step": 1.0, "max_steps": 100}
"""APPLR chose parameters once per second for at most 100 steps (same 100 s budget as BARN)."""
_LASER_DIM = 721


class ParamTableLike(Protocol):
    """What the loader needs of a planner parameter table (e.g. ``envs.planners.DWA_PARAMS``)."""

    names: tuple[str, ...]
    low: np.ndarray
    high: np.ndarray
    default: np.ndarray


@dataclass
class DirectoryOptions:
    """
    How to build a policy from a checkpoint directory (actor or SFT).

    :param mode: ``"actor"`` (TD3 actor of ``actor_head/``), ``"sft"`` (supervised head), or None: actor when the
        directory has ``actor_head/``.
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


class VLMDirectoryPolicy(LoadedPolicy):
    """
    A checkpoint directory: the extractor (and the TD3 policy in ``"actor"`` mode) plus how to read its outputs.

    :param extractor: Extractor holding the backbone, DPT head, history encoder and normalisation.
    :param policy: The TD3 policy (``"actor"`` mode), or None.
    :param checkpoint: Directory it was read from.
    :param use_velocity: Whether the velocity goes into the prompt (Dict observation).
    :param input_size: ``(height, width)`` incoming images should be resized to, or None.
    :param noise_std: Exploration noise std (in [-1, 1] action units) of ``predict(deterministic=False)``.
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
    ):
        env_kwargs: dict[str, Any] = {"velocity": use_velocity}
        if input_size is not None:
            env_kwargs["image_size"] = input_size
        super().__init__(name, mode, "costmap", names, env_kwargs)
        self.extractor, self.policy, self.checkpoint = extractor, policy, checkpoint
        self.use_velocity, self.input_size, self.noise_std = use_velocity, input_size, noise_std
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
        :return: ``"sft"``: the de-normalised head outputs ``[B, P]`` float64 (physical units) and None;
            ``"actor"``: None and the deterministic action ``[B, A]`` float32 in [-1, 1] (see :meth:`to_physical`).
        """
        obs: th.Tensor | dict[str, th.Tensor] = {"image": images, "velocity": velocity} if self.use_velocity else images
        if self.extractor.history is None:
            history = None
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


def load_policy(
    spec: str | os.PathLike,
    params: ParamTableLike | None = None,
    image_size: tuple[int, int] | None = None,
    device: str = "cpu",
    **options: Any,
) -> LoadedPolicy:
    """
    Load any policy format (see the module docstring) behind one ``predict``.

    :param spec: ``[name=]target``.
    :param params: The planner's parameter table (e.g. ``envs.planners.DWA_PARAMS``): needed by ``dwa`` specs and
        the APPLR actor (ranges), used for output names and actor ranges of directories.
    :param image_size: ``(height, width)`` of the costmap images a directory policy sees when it records none.
    :param device: Torch device of SB3 models.
    :param options: :class:`DirectoryOptions` fields for checkpoint directories (``mode``, ``base_model``, ...).
    :raises ValueError: for a spec that is none of the known kinds (naming it), or a missing ``params``.
    """
    text = os.fspath(spec)
    name, _, target = text.partition("=") if "=" in text.partition(":")[0] else ("", "", text)
    path = Path(target)
    if target == "dwa" or target.startswith("dwa:"):
        table = _need(params, text)
        values = np.asarray(table.default, dtype=np.float64).copy()
        for item in filter(None, target.partition(":")[2].split(",")):
            key, _, value = item.partition("=")
            if key.strip() not in table.names:
                raise ValueError(
                    f"policy {text!r}: unknown parameter {key.strip()!r}; the parameters are {table.names}"
                )
            values[table.names.index(key.strip())] = float(value)
        if hasattr(table, "validate"):
            values = table.validate(values)
        return FixedParams(name or target, values, table.names)
    if (path.is_dir() and (path / APPLR_ACTOR_FILE).is_file()) or path.name == APPLR_ACTOR_FILE:
        table = _need(params, text)
        policy = applr_policy(path, table.low, table.high, device=device)
        return SB3Policy(name or "applr", "applr", policy, "laser", table.names, APPLR_ENV)
    if path.is_file() and path.suffix == ".zip":
        return _sb3_zip(name or path.parent.name, path, params, device)
    if path.is_dir() and ((path / ACTOR_HEAD_DIR).is_dir() or (path / HEAD_DIR).is_dir()):
        opts = DirectoryOptions(**{"params": params, **options})
        loaded = load_directory(path, opts, name or path.name)
        if image_size is not None:
            loaded.env_kwargs.setdefault("image_size", tuple(image_size))
        return loaded
    if not path.exists() and ("/" in target or path.suffix):
        raise FileNotFoundError(f"policy {text!r}: {path} not found")
    raise ValueError(
        f"policy {text!r}: expected 'dwa', 'dwa:name=value,...', an APPLR directory (policy_actor), an SB3 .zip, "
        "or a policy/checkpoint directory (actor_head/ or regression_head/)"
    )


def _need(params: ParamTableLike | None, spec: str) -> ParamTableLike:
    if params is None:
        raise ValueError(f"policy {spec!r} needs the planner's parameter table: pass params=envs.planners.DWA_PARAMS")
    return params


def _sb3_zip(name: str, path: Path, params: ParamTableLike | None, device: str) -> SB3Policy:
    """An SB3 zip; the env settings of the training run it belongs to (``run_config.json`` above it) if any."""
    from sb3_vlm.zoo import OBSERVATIONS, load_zoo_config

    model = load_algorithm(path, device=device)
    env_id, env_kwargs = None, {}
    for parent in path.resolve().parents[:4]:
        if (parent / RUN_CONFIG).is_file():
            saved = json.loads((parent / RUN_CONFIG).read_text())
            cfg = load_zoo_config(saved["conf_file"], saved.get("env"))
            env_id, env_kwargs = cfg.env_id, {k: v for k, v in cfg.env_kwargs.items() if k != "reward"}
            break
    space = model.observation_space
    if env_id is not None:
        observation = OBSERVATIONS[env_id]
    else:
        observation = "laser" if isinstance(space, spaces.Box) and len(space.shape) == 1 else "costmap"
    if observation == "costmap" and isinstance(space, spaces.Dict):
        env_kwargs.setdefault("velocity", True)
    n = int(model.action_space.shape[0])
    names = (
        tuple(params.names) if params is not None and len(params.names) == n else tuple(f"param_{i}" for i in range(n))
    )
    return SB3Policy(name, "sb3", model, observation, names, env_kwargs)


def applr_policy(path: str | os.PathLike, low: np.ndarray, high: np.ndarray, device: str = "cpu") -> Any:
    """The published APPLR actor as an SB3 ``TD3Policy`` (721-d laser -> the planner's parameters)."""
    from stable_baselines3.td3.policies import TD3Policy

    from sb3_vlm.formats.applr import APPLR_NET_ARCH, applr_mu_state

    mu_state = applr_mu_state(path)
    obs_dim, act_dim = mu_state["0.weight"].shape[1], mu_state["4.weight"].shape[0]
    if act_dim != len(low):
        raise ValueError(f"APPLR actor {path} has {act_dim} outputs, the parameter table {len(low)}")
    observation_space = spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
    action_space = spaces.Box(np.asarray(low, np.float32), np.asarray(high, np.float32))
    policy = TD3Policy(observation_space, action_space, lambda _: 0.0, net_arch=APPLR_NET_ARCH).to(device)
    policy.actor.mu.load_state_dict(mu_state)
    policy.set_training_mode(False)
    return policy


def _batch_size(observation: Any, kind: str) -> tuple[int, bool]:
    """Batch size of an observation and whether it was batched."""
    if isinstance(observation, Mapping):
        observation = observation["image"]
    ndim = np.ndim(observation)
    batched = ndim == (2 if kind == "laser" else 4)
    return (len(observation) if batched else 1), batched


def _channels_first(images: Any) -> th.Tensor:
    """``[B, H, W, 3]`` (numpy or tensor) or ``[B, 3, H, W]`` -> a ``[B, 3, H, W]`` tensor (dtype kept)."""
    tensor = th.as_tensor(np.ascontiguousarray(images)) if not isinstance(images, th.Tensor) else images
    if tensor.shape[1] != 3 and tensor.shape[-1] == 3:
        tensor = tensor.permute(0, 3, 1, 2).contiguous()
    return tensor


def _velocity(velocity: Any, images: Any, image_space: spaces.Space | None) -> np.ndarray:
    """The given velocity, or zeros ``[B, 2]`` (``[2]`` for one unbatched image)."""
    if velocity is not None:
        return np.asarray(velocity, dtype=np.float32)
    batched = np.ndim(images) == 4
    return np.zeros((len(images), 2) if batched else (2,), dtype=np.float32)


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


def load_directory(
    checkpoint: str | os.PathLike, options: DirectoryOptions, name: str | None = None
) -> VLMDirectoryPolicy:
    """A policy or supervised checkpoint directory (base model included); see :class:`DirectoryOptions`."""
    checkpoint = Path(checkpoint)
    name = name or checkpoint.name
    ckpt = read_checkpoint(checkpoint)
    meta: dict[str, Any] = dict(ckpt.config.get(POLICY_METADATA_KEY) or {})
    recorded_kwargs: dict[str, Any] = dict(meta.get("policy_kwargs") or {})
    # The extractor as it was trained (the VLMConfig saved with the checkpoint or recorded by publish_policy; older
    # hand-offs recorded image_size/planner/seed only), then what serving changes.
    recorded = dict(ckpt.config.get("vlm") or recorded_kwargs.get("vlm") or {})
    for key in ("image_size", "planner", "seed"):
        if key in recorded_kwargs:
            recorded.setdefault(key, recorded_kwargs[key])
    recorded.setdefault("planner", options.algorithm)
    recorded.setdefault("seed", options.seed)
    vlm = VLMConfig.build(
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
    mode = options.mode or ("actor" if ACTOR_HEAD_DIR in ckpt.extras else "sft")
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

    if mode == "sft":
        extractor = VLMDPTExtractor(obs_space, vlm)
        policy = None
        num_outputs = ckpt.num_params
    else:
        if ACTOR_HEAD_DIR not in ckpt.extras:
            raise CheckpointError(
                f"{checkpoint}: no {ACTOR_HEAD_DIR}/ (mode='actor' serves a directory written by "
                "VLMTD3Policy.save_pretrained or publish_policy; use mode='sft' for a supervised checkpoint)"
            )
        action_space = _action_space(checkpoint, options.params, meta.get("action_space"))
        policy_kwargs: dict[str, Any] = {}
        if "net_arch" in recorded_kwargs:
            policy_kwargs["net_arch"] = recorded_kwargs["net_arch"]
        if "activation_fn" in recorded_kwargs:
            policy_kwargs["activation_fn"] = getattr(th.nn, str(recorded_kwargs["activation_fn"]))
        if "n_critics" in recorded_kwargs:
            policy_kwargs["n_critics"] = int(recorded_kwargs["n_critics"])
        policy = VLMTD3Policy.from_pretrained(checkpoint, obs_space, action_space, vlm=vlm, **policy_kwargs)
        policy.set_training_mode(False)
        extractor = policy.features_extractor
        num_outputs = int(action_space.shape[0])
    extractor.requires_grad_(False)
    extractor.train(False)
    names = _output_names(num_outputs, options.params, meta.get("parameter_names"))
    return VLMDirectoryPolicy(name, mode, extractor, policy, checkpoint, names, use_velocity, input_size)


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
