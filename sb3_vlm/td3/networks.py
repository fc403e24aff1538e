"""The actor and critic networks of :class:`~sb3_vlm.td3.policies.VLMTD3Policy`, on its one shared extractor."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BaseModel
from stable_baselines3.common.preprocessing import get_action_dim, preprocess_obs
from stable_baselines3.common.torch_layers import create_mlp
from stable_baselines3.common.type_aliases import PyTorchObs
from stable_baselines3.td3.policies import Actor
from torch import nn

from sb3_vlm.model.backbone import BackboneOutput
from sb3_vlm.model.extractor import VLMDPTExtractor

__all__ = ["DEFAULT_NET_ARCH", "VLMActor", "VLMCritic"]

# FTRL sizes: actor Linear(256 -> A) + tanh; critic: action encoder A -> 128 -> 64, Q heads 320 -> 512 -> 256 -> 1.
DEFAULT_NET_ARCH: dict[str, list[int]] = {"pi": [], "qf": [512, 256], "action_encoder": [128, 64]}
_EXTRACTOR = "features_extractor."


def _head_state(module: nn.Module) -> dict[str, th.Tensor]:
    """State dict of ``module`` without its (shared) features extractor."""
    return {k: v for k, v in module.state_dict().items() if not k.startswith(_EXTRACTOR)}


class _HeadParameters:
    """``parameters()`` of a network that uses the policy's shared extractor: its own head parameters only.

    The extractor (the backbone) belongs to the policy, which lists it once. SB3's ``TD3.train`` polyak-averages
    ``critic.parameters()`` into ``critic_target.parameters()`` (and the actor likewise); with the one shared
    backbone in both lists it would average each backbone tensor with itself in place, shrinking it by
    ``1 - tau**2`` per update. Listing heads only keeps stock TD3 (e.g. ``rl_zoo3.train --algo td3``) correct.
    """

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        for name, param in self.named_parameters(recurse=recurse):  # type: ignore[attr-defined]
            if not name.startswith(_EXTRACTOR):
                yield param


class VLMActor(_HeadParameters, Actor):
    """SB3's TD3 actor on the shared extractor; ``parameters()`` lists ``mu`` only (see :class:`_HeadParameters`)."""


class VLMCritic(_HeadParameters, BaseModel):
    """
    Twin-Q critic on the shared, detached 256-d feature (FTRL ``VLM_DPT_Critic``): each head sees
    ``concat(feature, action_encoder(action))``. With ``own_dpt`` (FTRL's ``freeze_dpt_critic: false``) the critic
    pools the backbone's detached hidden states with its own trainable copy of the DPT head instead (``dpt``).

    :param observation_space: Observation space.
    :param action_space: Action space (actions in [-1, 1]).
    :param net_arch: Hidden sizes of each Q head (FTRL: ``[512, 256]``).
    :param features_extractor: The shared extractor.
    :param features_dim: Feature size (256).
    :param action_encoder_arch: Action encoder sizes, the last is its output (FTRL: ``[128, 64]``); ``[]`` feeds
        the raw action, as SB3's ``ContinuousCritic``.
    :param activation_fn: Activation of the heads.
    :param normalize_images: SB3's image ``/255``.
    :param n_critics: Number of Q heads.
    :param own_dpt: Give the critic its own trainable copy of the extractor's DPT head.
    """

    features_extractor: VLMDPTExtractor

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        net_arch: list[int],
        features_extractor: VLMDPTExtractor,
        features_dim: int,
        action_encoder_arch: list[int],
        activation_fn: type[nn.Module] = nn.ReLU,
        normalize_images: bool = True,
        n_critics: int = 2,
        own_dpt: bool = False,
    ):
        super().__init__(
            observation_space, action_space, features_extractor=features_extractor, normalize_images=normalize_images
        )
        self.dpt = copy.deepcopy(features_extractor.dpt).requires_grad_(True) if own_dpt else None
        action_dim = get_action_dim(action_space)
        if action_encoder_arch:
            layers = create_mlp(action_dim, action_encoder_arch[-1], action_encoder_arch[:-1], activation_fn)
            self.action_encoder: nn.Module = nn.Sequential(*layers)
            encoded_dim = action_encoder_arch[-1]
        else:
            self.action_encoder = nn.Identity()
            encoded_dim = action_dim
        self.n_critics = n_critics
        self.q_networks: list[nn.Module] = []
        for idx in range(n_critics):
            q_net = nn.Sequential(*create_mlp(features_dim + encoded_dim, 1, net_arch, activation_fn))
            self.add_module(f"qf{idx}", q_net)
            self.q_networks.append(q_net)

    def q_values(self, features: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, ...]:
        """
        :param features: ``[B, 256]`` (detach them for FTRL's critic).
        :param actions: ``[B, A]`` in [-1, 1].
        :return: ``n_critics`` tensors ``[B, 1]``.
        """
        x = th.cat([features, self.action_encoder(actions)], dim=1)
        return tuple(q_net(x) for q_net in self.q_networks)

    def q1(self, features: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """First Q head only, ``[B, 1]`` (the actor loss)."""
        return self.q_networks[0](th.cat([features, self.action_encoder(actions)], dim=1))

    def own_features(self, out: BackboneOutput, history_feat: th.Tensor | None) -> th.Tensor:
        """The critic's own DPT pooling ``[B, 256]`` of the extractor's hidden states (detached here)."""
        assert self.dpt is not None, "own_features needs own_dpt=True"
        history = None if history_feat is None else history_feat.detach()
        return self.dpt.pool([h.detach() for h in out.hidden_states], history, out.attention_mask)

    def _features(self, obs: PyTorchObs) -> th.Tensor:
        if self.dpt is None:
            with th.no_grad():
                return self.extract_features(obs, self.features_extractor)
        with th.no_grad():
            hidden = self.features_extractor.hidden(_preprocess_all(obs, self.observation_space, self.normalize_images))
        return self.own_features(*hidden)

    def forward(self, obs: PyTorchObs, actions: th.Tensor) -> tuple[th.Tensor, ...]:
        return self.q_values(self._features(obs), actions)

    def q1_forward(self, obs: PyTorchObs, actions: th.Tensor) -> th.Tensor:
        return self.q1(self._features(obs), actions)


def _preprocess_all(obs: PyTorchObs, space: spaces.Space, normalize_images: bool) -> PyTorchObs:
    """SB3's ``preprocess_obs`` of an observation (Dict or image), keeping uint8 images uint8 (see :meth:`features`)."""
    if not normalize_images:
        return preprocess_obs(obs, space, normalize_images=False)  # type: ignore[return-value]
    if isinstance(obs, dict):
        assert isinstance(space, spaces.Dict)
        return {k: _preprocess(v, space[k], is_image=k == "image") for k, v in obs.items()}
    return _preprocess(obs, space, is_image=True)


def _preprocess(obs: th.Tensor, space: spaces.Space, is_image: bool) -> th.Tensor:
    """SB3's ``preprocess_obs`` (``normalize_images=True``), except that uint8 images stay uint8."""
    if is_image and obs.dtype == th.uint8 and isinstance(space, spaces.Box) and space.dtype == np.uint8:
        return obs
    return preprocess_obs(obs, space, normalize_images=True)  # type: ignore[return-value]
