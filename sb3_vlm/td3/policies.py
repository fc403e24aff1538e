"""TD3 policy around one shared VLM + DPT feature extractor (FTRL's actor/critic, docs/compat/ftrl.md §4.1)."""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from stable_baselines3.td3.policies import TD3Policy
from torch import nn

from envs.planners import PARAM_TABLES
from sb3_vlm._constants import ACTOR_HEAD_DIR, CRITIC_DIR
from sb3_vlm.flow.head import FlowMatchingHead
from sb3_vlm.flow.policy import FLOW_DIR
from sb3_vlm.formats.checkpoint import check_state, write_checkpoint
from sb3_vlm.model.backbone import BackboneOutput
from sb3_vlm.model.config import VLMConfig
from sb3_vlm.model.extractor import VLMDPTExtractor
from sb3_vlm.td3.networks import _EXTRACTOR, DEFAULT_NET_ARCH, VLMActor, VLMCritic, _head_state, _preprocess_all
from sb3_vlm.td3.prior import SupervisedPrior, has_supervised_head

__all__ = ["VLMCritic", "VLMPolicy", "VLMTD3Policy"]


class VLMTD3Policy(TD3Policy):
    """
    TD3 policy whose actor, critic and both targets share ONE :class:`VLMDPTExtractor` (one backbone in memory).

    Actor: extractor -> ``Linear(256 -> A)`` + tanh (hidden layers from ``net_arch["pi"]``). Critic: twin Q on the
    detached feature + an action encoder. Targets copy only these small heads; the extractor has no target copy.
    The actor optimizer holds the actor head and the trainable extractor parts (LoRA, DPT, history); the critic
    optimizer only the critic heads. ``state_dict()`` leaves out the base VLM weights (the policy is rebuilt from
    ``backbone`` on load) but keeps LoRA, the DPT head and the history encoder.

    With a frozen VLM, ``feature_cache_bytes`` turns on the extractor's content-keyed feature cache, so each distinct
    observation passes the backbone once in its life (rollout or replay), e.g.
    ``VLMTD3("VLMPolicy", env, policy_kwargs=dict(feature_cache_bytes=2 * 1024**3))``; see :class:`VLMDPTExtractor`.

    :param observation_space: Image Box or Dict (see :class:`VLMDPTExtractor`).
    :param action_space: Box action space.
    :param lr_schedule: Initial learning rate schedule (VLMTD3 sets actor/critic rates separately).
    :param net_arch: ``dict(pi=[...], qf=[...], action_encoder=[...])``; missing keys take FTRL's sizes
        ``pi=[]``, ``qf=[512, 256]``, ``action_encoder=[128, 64]``; a list sets both ``pi`` and ``qf``.
    :param activation_fn: Activation of the heads.
    :param vlm: The extractor's :class:`~sb3_vlm.model.config.VLMConfig` (or a dict of its fields), or None.
    :param normalize_images: SB3's image ``/255``.
    :param optimizer_class: Optimizer of actor and critic.
    :param optimizer_kwargs: Its kwargs, excluding the learning rate.
    :param n_critics: Number of Q heads.
    :param actor_prior: With a backbone that is a supervised checkpoint (``sb3-vlm pretrain``), start the actor at
        its policy: :class:`~sb3_vlm.td3.prior.SupervisedPrior`. True: its flow-matching expert's deterministic
        action when the checkpoint has ``flow_head/`` (e.g. a ``sb3-vlm distill`` student), else its regression
        head; ``"flow"`` or ``"sft"``: that one; False: a fresh actor (the supervised head only initialises the
        features).
    :param critic_dpt: Give the critic its own trainable copy of the DPT head (FTRL ``freeze_dpt_critic: false``)
        on the detached hidden states; False: the critic reads the shared pooled feature, detached. With it,
        :class:`~sb3_vlm.td3.td3.VLMTD3` updates run the backbone without the feature cache.
    :param vlm_kwargs: :class:`~sb3_vlm.model.config.VLMConfig` fields overriding ``vlm`` (``backbone``,
        ``freeze_vlm``, ``lora``, ``feature_cache_bytes``, ...), as flat ``policy_kwargs`` (zoo files use these). A
        ``backbone`` written by :meth:`save_pretrained` also brings its ``actor_head/`` and ``critic/``.
    """

    actor: VLMActor
    actor_target: VLMActor
    critic: VLMCritic
    critic_target: VLMCritic
    features_extractor: VLMDPTExtractor

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        vlm: VLMConfig | Mapping[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        n_critics: int = 2,
        actor_prior: bool | str = True,
        critic_dpt: bool = False,
        **vlm_kwargs: Any,
    ):
        self.vlm_config = VLMConfig.build(vlm, **vlm_kwargs)
        if actor_prior not in (True, False, "sft", "flow"):
            raise ValueError(f"actor_prior must be True, False, 'sft' or 'flow', got {actor_prior!r}")
        self.actor_prior = actor_prior
        self.critic_dpt = critic_dpt
        extractor_kwargs = {"config": self.vlm_config}
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch=_full_net_arch(net_arch),
            activation_fn=activation_fn,
            features_extractor_class=VLMDPTExtractor,
            features_extractor_kwargs=extractor_kwargs,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
            n_critics=n_critics,
            share_features_extractor=True,
        )

    def _build(self, lr_schedule: Schedule) -> None:
        self.features_extractor = self.make_features_extractor()
        # The flow expert of the actor prior: one frozen module, shared by the actor and its target like the extractor.
        self.flow_expert = self._load_flow_expert()
        self.actor = self.make_actor(self.features_extractor)
        self.actor_target = self.make_actor(self.features_extractor)
        self.critic = self.make_critic(self.features_extractor)
        self.critic_target = self.make_critic(self.features_extractor)
        self._load_pretrained_heads()
        self.actor_target.mu.load_state_dict(self.actor.mu.state_dict())
        self.critic_target.load_state_dict(_head_state(self.critic), strict=False)
        # Targets are only ever updated by polyak averaging of the heads.
        for target in (self.actor_target, self.critic_target):
            target.requires_grad_(False)  # heads only: their parameters() leave out the shared extractor

        trainable = [p for p in (*self.features_extractor.parameters(), *self.actor.parameters()) if p.requires_grad]
        self.actor.optimizer = self.optimizer_class(trainable, lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]
        self.critic.optimizer = self.optimizer_class(
            self.critic.parameters(),
            lr=lr_schedule(1),  # type: ignore[call-arg]
            **self.optimizer_kwargs,
        )

    def _load_pretrained_heads(self) -> None:
        """Load ``actor_head/`` and ``critic/`` of a checkpoint written by :meth:`save_pretrained`."""
        extras = self.features_extractor.pretrained_extras
        source = self.vlm_config.backbone
        for name, module in ((ACTOR_HEAD_DIR, self.actor), (CRITIC_DIR, self.critic)):
            if name in extras:
                check_state(_head_state(module), extras[name], f"{source}/{name}", f"this policy's {name}")
                module.load_state_dict(extras[name], strict=False)
        self.features_extractor.pretrained_extras = {}

    def _load_flow_expert(self) -> FlowMatchingHead | None:
        """The backbone checkpoint's ``flow_head/`` when the actor prior uses it (see ``actor_prior``), frozen."""
        source = self.vlm_config.backbone
        flow_dir = None if source is None else Path(source) / FLOW_DIR
        has_flow = flow_dir is not None and flow_dir.is_dir()
        if self.actor_prior == "flow" and not has_flow:
            raise FileNotFoundError(f"actor_prior='flow': the backbone {source!r} has no {FLOW_DIR}/ (sb3-vlm distill)")
        if self.actor_prior not in (True, "flow") or not has_flow:
            return None
        return FlowMatchingHead.from_pretrained(flow_dir).requires_grad_(False).eval().to(self.device)

    def make_actor(self, features_extractor: VLMDPTExtractor | None = None) -> VLMActor:
        if features_extractor is None:
            raise ValueError("VLMTD3Policy.make_actor needs the shared extractor, got None")
        actor_kwargs = self._update_features_extractor(self.actor_kwargs, features_extractor)
        actor = VLMActor(**actor_kwargs)
        if self.actor_prior and has_supervised_head(features_extractor, get_action_dim(self.action_space)):
            table = PARAM_TABLES[self.vlm_config.planner.upper()]
            n = get_action_dim(self.action_space)
            actor.mu = SupervisedPrior(actor.mu, features_extractor, table.low[:n], table.high[:n], self.flow_expert)
        return actor.to(self.device)

    def make_critic(self, features_extractor: VLMDPTExtractor | None = None) -> VLMCritic:
        if features_extractor is None:
            raise ValueError("VLMTD3Policy.make_critic needs the shared extractor, got None")
        return VLMCritic(
            self.observation_space,
            self.action_space,
            net_arch=self.net_arch["qf"],
            features_extractor=features_extractor,
            features_dim=features_extractor.features_dim,
            action_encoder_arch=self.net_arch["action_encoder"],
            activation_fn=self.activation_fn,
            normalize_images=self.normalize_images,
            n_critics=self.critic_kwargs["n_critics"],
            own_dpt=self.critic_dpt,
        ).to(self.device)

    def features(self, obs: PyTorchObs) -> th.Tensor:
        """
        SB3 preprocessing + the shared extractor: ``[B, 256]``.

        uint8 images reach the extractor as uint8: it divides by 255 itself, exactly as SB3's preprocessing would, and
        its feature cache keys them without a float round trip. Other entries are preprocessed as SB3 does.
        """
        if not self.normalize_images:
            return self.extract_features(obs, self.features_extractor)
        return self.features_extractor(_preprocess_all(obs, self.observation_space, True))

    def hidden(self, obs: PyTorchObs) -> tuple[BackboneOutput, th.Tensor | None]:
        """:meth:`features`' preprocessing + the extractor's hidden states and history feature (no cache)."""
        return self.features_extractor.hidden(_preprocess_all(obs, self.observation_space, self.normalize_images))

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        for key in ("features_extractor_class", "features_extractor_kwargs", "share_features_extractor"):
            data.pop(key)
        data.update(self.vlm_config.to_dict())  # flat, as policy_kwargs and zoo files give them
        data["actor_prior"] = self.actor_prior
        data["critic_dpt"] = self.critic_dpt
        return data

    def _is_saved_key(self, key: str) -> bool:
        """Everything but the shared extractor's aliases and the base VLM weights (LoRA is kept)."""
        if key.startswith(tuple(f"{net}.{_EXTRACTOR}" for net in ("actor", "actor_target", "critic", "critic_target"))):
            return False
        backbone = f"{_EXTRACTOR}backbone."
        if key.startswith(backbone):
            return key[len(backbone) :] in self.features_extractor.backbone.lora_parameter_names()
        return True

    def state_dict(self, *, destination: Any = None, prefix: str = "", keep_vars: bool = False) -> dict[str, Any]:
        """The policy's state without the base VLM weights and without duplicate extractor keys."""
        full = super().state_dict(prefix=prefix, keep_vars=keep_vars)
        state = OrderedDict((k, v) for k, v in full.items() if self._is_saved_key(k[len(prefix) :]))
        if destination is not None:
            destination.update(state)
            return destination
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Load a :meth:`state_dict`; with ``strict`` its keys must be exactly this policy's saved keys."""
        expected = set(self.state_dict())
        missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
        if strict and (missing or unexpected):
            raise RuntimeError(
                f"Error(s) in loading state_dict for {type(self).__name__}: missing keys {missing[:8]}, "
                f"unexpected keys {unexpected[:8]}"
            )
        result = super().load_state_dict(
            {k: v for k, v in state_dict.items() if k in expected}, strict=False, assign=assign
        )
        result.missing_keys[:] = missing
        result.unexpected_keys[:] = unexpected
        return result

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """
        Write the trainable parts in the FTRL layout (adapter, ``regression_head/``, ``history_encoder/``,
        ``normalization/``) plus ``actor_head/`` and ``critic/`` (safetensors), atomically; then the flow expert of
        the actor prior, if any, into ``flow_head/`` (so the directory rebuilds the same actor).

        :param path: Target directory (replaced if it exists).
        :return: ``path``.
        """
        parts = self.features_extractor.checkpoint_parts()
        parts.extras = {ACTOR_HEAD_DIR: _head_state(self.actor), CRITIC_DIR: _head_state(self.critic)}
        backbone = self.features_extractor.backbone
        path = write_checkpoint(path, parts, save_adapter=backbone.save_adapter if backbone.has_adapter else None)
        if self.flow_expert is not None:
            self.flow_expert.save_pretrained(path / FLOW_DIR)
        return path

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        **kwargs: Any,
    ) -> VLMTD3Policy:
        """
        Rebuild a policy written by :meth:`save_pretrained` (or start from an FTRL SFT checkpoint), with the
        :class:`~sb3_vlm.model.config.VLMConfig` saved in the directory (see :meth:`VLMConfig.from_checkpoint`).

        :param path: Checkpoint directory.
        :param observation_space: Observation space of the policy.
        :param action_space: Action space of the policy.
        :param kwargs: Other constructor arguments: ``vlm`` (a whole config instead of the saved one), config fields
            overriding it (``freeze_vlm``, ...), ``net_arch``, ...
        :return: The policy; its optimizers have learning rate 0 until an algorithm sets them.
        """
        overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in VLMConfig.field_names()}
        vlm = kwargs.pop("vlm", None)
        if vlm is None:
            config = VLMConfig.from_checkpoint(path, **overrides)
        else:
            config = VLMConfig.build(vlm, **{**overrides, "backbone": os.fspath(path)})
        return cls(observation_space, action_space, cls._dummy_schedule, vlm=config, **kwargs)


def _full_net_arch(net_arch: list[int] | dict[str, list[int]] | None) -> dict[str, list[int]]:
    if net_arch is None:
        return dict(DEFAULT_NET_ARCH)
    if isinstance(net_arch, list):
        return {**DEFAULT_NET_ARCH, "pi": list(net_arch), "qf": list(net_arch)}
    if not isinstance(net_arch, dict):
        raise TypeError(f"net_arch must be a list of ints or a dict, got {type(net_arch).__name__}")
    unknown = set(net_arch) - set(DEFAULT_NET_ARCH)
    if unknown:
        raise ValueError(f"net_arch keys must be among {sorted(DEFAULT_NET_ARCH)}, got {sorted(net_arch)}")
    return {**DEFAULT_NET_ARCH, **{k: list(v) for k, v in net_arch.items()}}


VLMPolicy = VLMTD3Policy
