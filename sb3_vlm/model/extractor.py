"""SB3 features extractor: image (+ velocity) -> Qwen2.5-VL hidden states -> DPT attention pooling -> [B, 256]."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

from sb3_vlm._constants import ADAPTER_CONFIG, FEATURE_DIM, TINY
from sb3_vlm.formats.checkpoint import (
    CheckpointError,
    FTRLCheckpoint,
    is_checkpoint_dir,
    load_module_state,
    read_checkpoint,
    write_checkpoint,
)
from sb3_vlm.model.backbone import BackboneOutput, VLMBackbone, check_prompts
from sb3_vlm.model.cache import FeatureCache, content_keys, module_tensors, stack_hidden, to_storage
from sb3_vlm.model.config import VLMConfig
from sb3_vlm.model.heads import DPTHead, HistoryEncoder, history_transform
from sb3_vlm.model.observations import ObsType, as_float, check_space, image_subspace, split

__all__ = ["VLMDPTExtractor"]

HistoryType = Sequence[Sequence[th.Tensor] | None] | None

_CACHE_DTYPES = {"float16": th.float16, "bfloat16": th.bfloat16, "float32": th.float32}


class VLMDPTExtractor(BaseFeaturesExtractor):
    """
    FTRL's VLM + DPT feature extractor (docs/compat/ftrl.md §4.1) as an SB3 ``BaseFeaturesExtractor``.

    Observations: an image Box (channel-first ``[B, 3, H, W]`` after SB3's ``VecTransposeImage``; uint8, or float in
    [0, 1] after SB3's ``/255``), or a Dict ``{"image": <that Box>, "velocity": Box (2,) [v m/s, w rad/s]}``.
    The velocity goes into FTRL's prompt when the backbone has a tokenizer; the tiny backbone has none and ignores it.
    A history encoder (from a checkpoint) sees the current frame repeated ``num_history_frames`` times, the FTRL
    server's behaviour when no earlier frames are available.

    ``backbone`` may be ``"tiny"``, a local Qwen2.5-VL directory, or a checkpoint directory in the FTRL layout (then
    the adapter, DPT head, history encoder and normalisation come from it and the base model from ``base_model``,
    ``sb3_vlm_config.json`` or the adapter's ``base_model_name_or_path``, in that order).

    A frozen part stays in eval mode and runs under ``torch.no_grad`` (never ``inference_mode``, so its outputs can
    feed trainable heads).

    Feature cache (``feature_cache_bytes > 0``, off by default): while the VLM is frozen (``freeze_vlm=True``: no LoRA,
    or LoRA merged), each distinct observation passes the backbone once; :attr:`feature_cache` (a
    :class:`~sb3_vlm.model.cache.FeatureCache`, LRU under the byte budget, keyed by the image bytes + velocity) then
    serves it to rollouts and replay alike. What is stored (:attr:`cache_mode`):

    * ``"hidden"`` -- the last-4 hidden states per image, ``[4, L, H]`` in ``feature_cache_dtype``, while the DPT head
      (or the history encoder) trains; the DPT head runs on the stored states, every pass;
    * ``"features"`` -- the pooled ``[256]`` float32 feature when the DPT head and history encoder are frozen too.

    Every result goes through the stored form, hit or miss, so outputs do not depend on the cache's state. The cache is
    cleared when a cached-side parameter or buffer changes (optimizer steps, ``load_state_dict``, ``.to()``: anything
    that bumps a tensor's version counter or moves it); writes through ``.data`` bypass version counters: call
    ``feature_cache.clear()`` after those. The cache is not part of ``state_dict`` or any checkpoint. The default
    float32 storage reproduces uncached training to float tolerance. ``"float16"`` halves the memory but rounds the
    hidden states (features move by ~5e-3 with the tiny model), and Adam amplifies that within a few updates: training
    is then close to, not the same as, uncached training.

    :param observation_space: Image Box or Dict with ``"image"`` (and optionally ``"velocity"``).
    :param config: A :class:`~sb3_vlm.model.config.VLMConfig` (or a dict of its fields), or None for the defaults.
    :param kwargs: :class:`~sb3_vlm.model.config.VLMConfig` fields overriding ``config`` (``backbone``,
        ``base_model``, ``freeze_vlm``, ``freeze_dpt``, ``freeze_history``, ``lora``, ``quantization``, ``dtype``,
        ``image_size``, ``planner``, ``num_params``, ``seed``, ``feature_cache_bytes``, ``feature_cache_dtype``);
        see its field help.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        config: VLMConfig | Mapping[str, Any] | None = None,
        **kwargs: Any,
    ):
        super().__init__(observation_space, features_dim=FEATURE_DIM)
        self.config = config = VLMConfig.build(config, **kwargs)
        self.has_velocity = check_space(observation_space)
        if config.feature_cache_bytes and not config.freeze_vlm:
            warnings.warn(
                "VLMDPTExtractor: the feature cache stays inactive while the VLM trains (freeze_vlm=False)",
                stacklevel=2,
            )
        self.feature_cache = FeatureCache(config.feature_cache_bytes) if config.feature_cache_bytes else None
        self.feature_cache_dtype = _CACHE_DTYPES[config.feature_cache_dtype]
        self._uint8_images = image_subspace(observation_space).dtype == np.uint8
        backbone = config.backbone
        ckpt = read_checkpoint(backbone) if is_checkpoint_dir(backbone) else None
        adapter = None if ckpt is None else ckpt.adapter_dir
        lora = _fresh_lora(config, adapter)
        freeze_vlm, freeze_dpt, freeze_history = config.freeze_vlm, config.freeze_dpt, config.freeze_history
        self.freeze_vlm, self.freeze_dpt = freeze_vlm, freeze_dpt
        self.freeze_history = freeze_dpt if freeze_history is None else freeze_history
        self.backbone = VLMBackbone.from_pretrained(
            backbone if ckpt is None else _base_of_checkpoint(backbone, ckpt, config.base_model),
            dtype=config.dtype,
            quantization=config.quantization,
            lora=lora,
            adapter=adapter,
            adapter_trainable=not freeze_vlm,
            planner=config.planner,
            image_size=config.image_size,
            seed=config.seed,
        )
        self.history: HistoryEncoder | None = None
        self.history_image_size = 224
        self.param_mean: np.ndarray | None = None
        self.param_std: np.ndarray | None = None
        # actor_head / critic state dicts of a checkpoint written by VLMTD3Policy.save_pretrained.
        self.pretrained_extras: dict[str, dict[str, th.Tensor]] = {}
        if ckpt is None:
            self.dpt = DPTHead(self.backbone.hidden_size, config.num_params)
        else:
            self._load_checkpoint_heads(backbone, ckpt)
        self.dpt.requires_grad_(not freeze_dpt)
        if self.history is not None:
            self.history.requires_grad_(not self.freeze_history)
        self.train(False)

    def _load_checkpoint_heads(self, path: str, ckpt: FTRLCheckpoint) -> None:
        head_file = f"{path}/regression_head/pytorch_model.bin"
        head_h = ckpt.head_state["projections.0.0.weight"].shape[1]
        if head_h != self.backbone.hidden_size:
            raise CheckpointError(
                f"{head_file}: key 'projections.0.0.weight' expects hidden size {self.backbone.hidden_size} "
                f"of the backbone {self.backbone.source!r}, got {head_h}"
            )
        self.dpt = DPTHead.from_state_dict(ckpt.head_state)
        if ckpt.history_state is not None:
            cfg = ckpt.history_config
            self.history = HistoryEncoder(
                hidden_dim=int(cfg.get("history_dim", 256)), num_frames=int(cfg.get("num_history_frames", 2))
            )
            load_module_state(self.history, ckpt.history_state, f"{path}/history_encoder/pytorch_model.bin")
            self.history_image_size = int(cfg.get("history_image_size", 224))
        self.param_mean, self.param_std = ckpt.param_mean, ckpt.param_std
        self.pretrained_extras = dict(ckpt.extras)

    def train(self, mode: bool = True) -> VLMDPTExtractor:
        """Set train/eval mode; frozen parts stay in eval mode (no dropout)."""
        super().train(mode)
        for module, frozen in ((self.backbone, self.freeze_vlm), (self.dpt, self.freeze_dpt)):
            if frozen:
                module.eval()
        if self.history is not None and self.freeze_history:
            self.history.eval()
        return self

    def _inputs(self, observations: ObsType) -> tuple[th.Tensor, th.Tensor | None]:
        """Images ``[B, 3, H, W]`` float in [0, 1] and velocity ``[B, 2]`` or None."""
        images, velocity = split(observations)
        return as_float(images), velocity

    def history_input(self, images: th.Tensor, history: HistoryType = None) -> th.Tensor:
        """
        The history encoder's input ``[B, T, 3, s, s]``: per image its earlier frames as given (newest first, cut to
        ``T`` or padded with the oldest given one), or the current frame repeated when it has none.

        :param images: Current frames ``[B, 3, H, W]`` float in [0, 1].
        :param history: None, or per image a sequence of frames ``[3, h, w]`` (uint8, or float in [0, 1]) or None.
        """
        assert self.history is not None
        t, size = self.history.num_frames, self.history_image_size
        if history is None:
            return history_transform(images, size)[:, None].expand(-1, t, -1, -1, -1)
        if len(history) != len(images):
            raise ValueError(f"VLMDPTExtractor: history needs one entry per image ({len(images)}), got {len(history)}")
        rows = []
        for current, frames in zip(images, history, strict=True):
            if not frames:
                rows.append(history_transform(current, size)[None].expand(t, -1, -1, -1))
                continue
            frames = list(frames[:t]) + [frames[min(len(frames), t) - 1]] * max(0, t - len(frames))
            rows.append(th.stack([history_transform(as_float(f), size) for f in frames]))
        return th.stack(rows)

    def _history(self, images: th.Tensor, history: HistoryType = None) -> th.Tensor | None:
        """History feature ``[B, history_dim]`` of float images (see :meth:`history_input`), or None."""
        if self.history is None:
            return None
        frames = self.history_input(images, history)
        with th.set_grad_enabled(th.is_grad_enabled() and not self.freeze_history):
            return self.history(frames)

    def hidden(
        self, observations: ObsType, history: HistoryType = None, prompts: Sequence[str] | None = None
    ) -> tuple[BackboneOutput, th.Tensor | None]:
        """The backbone's tapped hidden states and the history feature (``[B, history_dim]`` or None): what the DPT
        pooling reads (:meth:`forward` without the feature cache pools them)."""
        images, velocity = self._inputs(observations)
        with th.set_grad_enabled(th.is_grad_enabled() and not self.freeze_vlm):
            out = self.backbone(images, velocity, prompts)
        return out, self._history(images, history)

    def forward(
        self, observations: ObsType, history: HistoryType = None, prompts: Sequence[str] | None = None
    ) -> th.Tensor:
        """
        :param observations: Image batch ``[B, 3, H, W]`` (uint8, or float in [0, 1]) or Dict with ``"image"``
            (+ ``"velocity"`` ``[B, 2]``).
        :param history: Earlier frames per image for the history encoder (see :meth:`history_input`); None: the
            current frame repeated (what SB3 training feeds). Given frames bypass the feature cache.
        :param prompts: ``B`` instruction texts for the VLM's input (see :meth:`VLMBackbone.build_inputs`), or None;
            the feature cache keys each image with its prompt.
        :return: DPT pooled features ``[B, 256]`` float32.
        """
        state = self._cache_state() if history is None else None
        if state is not None:
            return self._cached_forward(observations, *state, prompts=prompts)
        return self.pool(*self.hidden(observations, history, prompts))

    def pool(self, out: BackboneOutput, history_feat: th.Tensor | None) -> th.Tensor:
        """The DPT pooled feature ``[B, 256]`` of :meth:`hidden`'s output."""
        with th.set_grad_enabled(th.is_grad_enabled() and self._pooling_trains):
            return self.dpt.pool(out.hidden_states, history_feat, out.attention_mask)

    @property
    def _pooling_trains(self) -> bool:
        """Whether anything upstream of the pooled feature trains (VLM, DPT or history encoder)."""
        history_frozen = self.history is None or self.freeze_history
        return not (self.freeze_vlm and self.freeze_dpt and history_frozen)

    @property
    def cache_mode(self) -> str | None:
        """
        What :attr:`feature_cache` stores now: ``"features"`` (pooled ``[256]``: VLM, DPT and history frozen),
        ``"hidden"`` (last-4 hidden states: only the VLM frozen), or None (no cache, or the VLM trains).
        """
        state = self._cache_state()
        return None if state is None else state[0]

    def _cache_state(self) -> tuple[str, Hashable] | None:
        """
        The cache mode and the version of its cached side (equal exactly while that side is unchanged: mode, dtype,
        train flags, every parameter's and buffer's address and version counter), or None when nothing is cached.
        """
        if self.feature_cache is None or not self.freeze_vlm:
            return None
        backbone = module_tensors(self.backbone)
        if any(t.requires_grad for t in backbone):
            return None
        heads = [self.dpt] + ([] if self.history is None else [self.history])
        head_tensors = [t for module in heads for t in module_tensors(module)]
        heads_frozen = self.freeze_dpt and (self.history is None or self.freeze_history)
        if heads_frozen and not any(t.requires_grad for t in head_tensors):
            mode, modules, tensors = "features", [self.backbone, *heads], backbone + head_tensors
        else:
            mode, modules, tensors = "hidden", [self.backbone], backbone
        version = (
            mode,
            self.feature_cache_dtype,
            tuple(m.training for m in modules),
            tuple((t.data_ptr(), t._version) for t in tensors),
        )
        return mode, version

    def _cached_forward(
        self, observations: ObsType, mode: str, version: Hashable, prompts: Sequence[str] | None = None
    ) -> th.Tensor:
        """:meth:`forward` through :attr:`feature_cache` (see the class docstring)."""
        assert self.feature_cache is not None
        raw, velocity = split(observations)
        if raw.dtype != th.uint8:
            as_float(raw)  # validates the value range
        self.feature_cache.sync(version)
        keys = content_keys(raw, velocity, uint8_images=self._uint8_images)
        if prompts is not None:
            check_prompts(prompts, len(raw))
            keys = [key + text.encode() for key, text in zip(keys, prompts, strict=True)]  # key: fixed-size digest

        def compute(rows: list[int]) -> list[th.Tensor]:
            index = th.as_tensor(rows, device=raw.device)
            images = as_float(raw[index])
            with th.no_grad():
                texts = None if prompts is None else [prompts[r] for r in rows]
                out = self.backbone(images, None if velocity is None else velocity[index], texts)
                if mode == "features":
                    pooled = self.dpt.pool(out.hidden_states, self._history(images), out.attention_mask)
                    return list(to_storage(pooled, th.float32).unbind(0))
            stacked = to_storage(th.stack(out.hidden_states, dim=1), self.feature_cache_dtype)  # [m, 4, L, H]
            lengths = [stacked.shape[2]] * len(rows) if out.attention_mask is None else out.attention_mask.sum(1)
            return [stacked[i, :, : int(n)].clone() for i, n in enumerate(lengths)]

        values = self.feature_cache.get_or_compute(keys, compute)
        if mode == "features":
            return th.stack(values)
        hidden, attention_mask = stack_hidden(values)
        history_feat = self._history(as_float(raw)) if self.history is not None else None
        with th.set_grad_enabled(th.is_grad_enabled() and self._pooling_trains):
            return self.dpt.pool(hidden, history_feat, attention_mask)

    @th.no_grad()
    def predict_parameters(
        self, observations: ObsType, history: HistoryType = None, prompts: Sequence[str] | None = None
    ) -> th.Tensor:
        """
        The supervised (SFT) prediction: DPT head incl. its ``mlp``, de-normalised with the checkpoint statistics
        (``pred * std + mean``, no epsilon, no clipping; raw outputs without statistics), as FTRL's server returns.

        :param prompts: ``B`` instruction texts (a prompt-conditioned checkpoint, ``sb3-vlm pretrain --prompts``), or
            None.
        :return: ``[B, P]`` planner parameters in physical units.
        """
        out, history_feat = self.hidden(observations, history, prompts)
        return self.denormalize(self.dpt(out.hidden_states, history_feat, out.attention_mask))

    def denormalize(self, pred: th.Tensor) -> th.Tensor:
        """Normalised head outputs ``[B, P]`` -> physical units: ``pred * std + mean`` (as is without statistics)."""
        if self.param_mean is None:
            return pred
        return pred * pred.new_tensor(self.param_std) + pred.new_tensor(self.param_mean)

    @th.no_grad()
    def attention_weights(self, observations: ObsType) -> th.Tensor:
        """DPT attention-pooling weights over the token sequence, ``[B, L]`` (rows sum to 1), for visualisation."""
        out, _ = self.hidden(observations)
        return self.dpt.attention_weights(out.hidden_states, out.attention_mask)

    def checkpoint_parts(self) -> FTRLCheckpoint:
        """The extractor's parts in the FTRL layout (adapter excepted: see :meth:`VLMBackbone.save_adapter`)."""
        parts = FTRLCheckpoint(
            head_state=self.dpt.state_dict(),
            param_mean=self.param_mean,
            param_std=self.param_std,
            # The base model and every other setting: enough to rebuild this extractor from the directory alone.
            config={
                "base_model": self.backbone.source,
                "vlm": self.config.replace(backbone=self.backbone.source, base_model=None).to_dict(),
            },
        )
        if self.history is not None:
            parts.history_state = self.history.state_dict()
            parts.history_config = {
                "use_history": True,
                "num_history_frames": self.history.num_frames,
                "history_dim": self.history.hidden_dim,
                "history_image_size": self.history_image_size,
            }
        return parts

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write the adapter (if any), DPT head, history encoder and normalisation in the FTRL layout, atomically."""
        save_adapter = self.backbone.save_adapter if self.backbone.has_adapter else None
        return write_checkpoint(path, self.checkpoint_parts(), save_adapter=save_adapter)


def _base_of_checkpoint(path: str, ckpt: FTRLCheckpoint, base_model: str | os.PathLike | None) -> str:
    """Where the base model of a checkpoint comes from (see the class docstring)."""
    if base_model is not None:
        return str(base_model)
    if "base_model" in ckpt.config:
        return str(ckpt.config["base_model"])
    if ckpt.adapter_dir is not None:
        name = json.loads((ckpt.adapter_dir / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
        if name == TINY or (name and Path(name, "config.json").is_file()):
            return name
        raise ValueError(
            f"checkpoint {path}: its adapter's base model {name!r} is not 'tiny' or a local directory; pass "
            "base_model='/path/to/Qwen2.5-VL' (nothing is downloaded)"
        )
    raise ValueError(f"checkpoint {path} does not name its base model; pass base_model='tiny' or a local directory")


def _fresh_lora(config: VLMConfig, adapter: Any) -> dict[str, Any] | None:
    """The fresh LoRA to add to the backbone: ``config.lora``, unless the VLM is frozen (a frozen fresh LoRA is a
    no-op: ignored, with a warning). A trained VLM needs LoRA: a fresh one or the checkpoint's ``adapter``."""
    lora = config.lora
    if lora is not None and config.freeze_vlm:
        warnings.warn(
            "VLMDPTExtractor: `lora` is ignored with freeze_vlm=True (a frozen fresh LoRA is a no-op)", stacklevel=3
        )
        lora = None
    if not config.freeze_vlm and lora is None and adapter is None:
        raise ValueError(
            "VLMDPTExtractor: freeze_vlm=False trains LoRA only; pass lora=dict(r=..., ...) or a checkpoint with "
            f"an adapter, got lora=None and backbone={config.backbone!r}"
        )
    return lora
