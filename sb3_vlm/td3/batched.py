"""A twin-Q critic evaluated as one network: one batched matrix product per layer for all the Q heads."""

from __future__ import annotations

import math
from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BaseModel
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.td3.policies import TD3Policy
from torch import nn
from torch.nn import functional as F

from sb3_vlm._validation import check_int

__all__ = ["BatchedCritic", "BatchedMLP", "BatchedMlpPolicy", "BatchedTD3Policy"]


class BatchedMLP(nn.Module):
    """
    ``n`` MLPs of one shape (SB3's ``create_mlp``: Linear, [LayerNorm,] activation, ..., Linear) stored as stacked
    weights and evaluated together, one ``baddbmm`` per layer.

    ``state_dict`` keeps the layout of ``n`` separate ``nn.Sequential`` (see :meth:`sequential_state`), so weights
    move between this module and SB3's ``ContinuousCritic`` unchanged.

    :param n: Number of MLPs.
    :param input_dim: Input size.
    :param net_arch: Hidden sizes.
    :param activation_fn: Activation after each hidden layer (without parameters).
    :param layer_norm: A LayerNorm (per MLP, affine) between each hidden Linear and its activation.
    :param output_dim: Output size.
    """

    def __init__(
        self,
        n: int,
        input_dim: int,
        net_arch: list[int],
        activation_fn: type[nn.Module] = nn.ReLU,
        layer_norm: bool = False,
        output_dim: int = 1,
    ):
        super().__init__()
        check_int(n, "n", owner="BatchedMLP")
        self.activation = activation_fn()
        if any(True for _ in self.activation.parameters()):
            raise ValueError(f"BatchedMLP: the activation must have no parameters, got {activation_fn.__name__}")
        self.n, self.layer_norm = n, layer_norm
        dims = [input_dim, *net_arch, output_dim]
        # weight j: [n, in, out] (x @ W, the layout batched matmuls read fastest); bias j: [n, 1, out].
        self.weights = nn.ParameterList(
            nn.Parameter(th.empty(n, i, o)) for i, o in zip(dims[:-1], dims[1:], strict=False)
        )
        self.biases = nn.ParameterList(nn.Parameter(th.empty(n, 1, o)) for o in dims[1:])
        hidden = dims[1:-1] if layer_norm else []
        self.norm_weights = nn.ParameterList(nn.Parameter(th.ones(n, 1, o)) for o in hidden)
        self.norm_biases = nn.ParameterList(nn.Parameter(th.zeros(n, 1, o)) for o in hidden)
        for weight, bias in zip(self.weights, self.biases, strict=True):
            # nn.Linear's default initialisation: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias.
            bound = 1 / math.sqrt(weight.shape[1])
            nn.init.uniform_(weight, -bound, bound)
            nn.init.uniform_(bias, -bound, bound)

    def _hidden(self, j: int, h: th.Tensor, member: int | slice) -> th.Tensor:
        """LayerNorm (if any) and activation after hidden layer ``j``."""
        if self.layer_norm:
            h = F.layer_norm(h, h.shape[-1:]) * self.norm_weights[j][member] + self.norm_biases[j][member]
        return self.activation(h)

    def forward(self, x: th.Tensor) -> th.Tensor:
        """
        :param x: ``[B, in]`` (the same input for every MLP) or ``[n, B, in]``.
        :return: ``[n, B, out]``.
        """
        h = x.expand(self.n, *x.shape) if x.dim() == 2 else x
        last = len(self.weights) - 1
        for j, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = th.baddbmm(bias, h, weight)
            if j < last:
                h = self._hidden(j, h, slice(None))
        return h

    def member(self, i: int, x: th.Tensor, tail: th.Tensor | None = None) -> th.Tensor:
        """
        MLP ``i`` alone on ``cat([x, tail], dim=1)``, without building the concatenation: the first layer's input
        rows are split, so no gradient is computed for the ``x`` part when ``x`` and the weights need none.

        :param x: ``[B, d]``.
        :param tail: ``[B, in - d]`` or None (``x`` is the whole input).
        :return: ``[B, out]``.
        """
        first = self.weights[0][i]
        d = x.shape[1]
        h = th.addmm(self.biases[0][i], x, first[:d])
        if tail is not None:
            h = th.addmm(h, tail, first[d:])
        for j in range(1, len(self.weights)):
            h = th.addmm(self.biases[j][i], self._hidden(j - 1, h, i), self.weights[j][i])
        return h

    def sequential_state(self) -> dict[str, th.Tensor]:
        """
        The weights as ``n`` ``nn.Sequential`` of ``create_mlp`` hold them: ``"{i}.{k}.weight"`` ``[out, in]`` and
        ``"{i}.{k}.bias"`` for MLP ``i`` and module index ``k`` (Linear, [LayerNorm,] activation, ...), detached
        contiguous copies (safetensors-ready).
        """
        stride = 3 if self.layer_norm else 2
        state = {}
        for i in range(self.n):
            for j, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
                state[f"{i}.{stride * j}.weight"] = weight[i].detach().t().contiguous()
                state[f"{i}.{stride * j}.bias"] = bias[i, 0].detach().clone()
            for j, (gain, shift) in enumerate(zip(self.norm_weights, self.norm_biases, strict=True)):
                state[f"{i}.{stride * j + 1}.weight"] = gain[i, 0].detach().clone()
                state[f"{i}.{stride * j + 1}.bias"] = shift[i, 0].detach().clone()
        return state

    def stacked_state(self, sequential: dict[str, th.Tensor]) -> dict[str, th.Tensor]:
        """The inverse of :meth:`sequential_state`: this module's own keys (``weights.j``, ...) from those entries.
        Entries that are missing are left out (``load_state_dict`` reports them as missing)."""
        stride = 3 if self.layer_norm else 2
        out = {}
        try:
            for j in range(len(self.weights)):
                out[f"weights.{j}"] = th.stack([sequential[f"{i}.{stride * j}.weight"].t() for i in range(self.n)])
                out[f"biases.{j}"] = th.stack([sequential[f"{i}.{stride * j}.bias"][None] for i in range(self.n)])
            for j in range(len(self.norm_weights)):
                k = stride * j + 1
                out[f"norm_weights.{j}"] = th.stack([sequential[f"{i}.{k}.weight"][None] for i in range(self.n)])
                out[f"norm_biases.{j}"] = th.stack([sequential[f"{i}.{k}.bias"][None] for i in range(self.n)])
        except KeyError:
            return {}
        return out


class BatchedCritic(BaseModel):
    """
    Drop-in for SB3's ``ContinuousCritic`` (same constructor arguments, ``forward`` and ``q1_forward``, same
    ``state_dict`` keys ``qf{i}.{k}.weight``) whose ``n_critics`` Q heads run as one :class:`BatchedMLP`.

    ``q1_forward`` (the actor loss) splits the first layer into its feature and action rows, so the actor's
    backward pass computes no gradient for the feature rows.

    :param observation_space: Observation space.
    :param action_space: Action space.
    :param net_arch: Hidden sizes of each Q head.
    :param features_extractor: The critic's features extractor.
    :param features_dim: Its output size.
    :param activation_fn: Activation (without parameters).
    :param normalize_images: SB3's image ``/255``.
    :param n_critics: Number of Q heads.
    :param share_features_extractor: The extractor is the actor's (the critic then runs it without gradient).
    :param layer_norm: A LayerNorm after each hidden Linear of the Q heads (``state_dict`` then holds it at index
        ``k + 1`` of each Linear ``k``, the layout of ``nn.Sequential(Linear, LayerNorm, act, ...)``).
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        net_arch: list[int],
        features_extractor: BaseFeaturesExtractor,
        features_dim: int,
        activation_fn: type[nn.Module] = nn.ReLU,
        normalize_images: bool = True,
        n_critics: int = 2,
        share_features_extractor: bool = True,
        layer_norm: bool = False,
    ):
        super().__init__(
            observation_space, action_space, features_extractor=features_extractor, normalize_images=normalize_images
        )
        self.share_features_extractor = share_features_extractor
        self.n_critics = n_critics
        self.q_nets = BatchedMLP(
            n_critics, features_dim + get_action_dim(action_space), net_arch, activation_fn, layer_norm
        )
        self.register_state_dict_post_hook(_sequential_keys)
        self.register_load_state_dict_pre_hook(_stacked_keys)

    def _features(self, obs: th.Tensor) -> th.Tensor:
        # As SB3: a shared extractor learns from the actor loss only.
        with th.set_grad_enabled(th.is_grad_enabled() and not self.share_features_extractor):
            return self.extract_features(obs, self.features_extractor)

    def forward(self, obs: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, ...]:
        """
        :param obs: Observations ``[B, ...]``.
        :param actions: ``[B, A]`` in [-1, 1].
        :return: ``n_critics`` tensors ``[B, 1]``.
        """
        q = self.q_nets(th.cat([self._features(obs), actions], dim=1))
        return q.unbind(0)

    def q1_forward(self, obs: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """First Q head only, ``[B, 1]``; the features carry no gradient (SB3's ``q1_forward``)."""
        with th.no_grad():
            features = self.extract_features(obs, self.features_extractor)
        return self.q_nets.member(0, features, actions)


def _sequential_keys(module: BatchedCritic, state: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    """State-dict post-hook: the stacked ``q_nets.*`` entries -> SB3's ``qf{i}.{k}.*`` (see :class:`BatchedMLP`)."""
    for key in [k for k in state if k.startswith(f"{prefix}q_nets.")]:
        del state[key]
    for key, value in module.q_nets.sequential_state().items():
        i, rest = key.split(".", 1)
        state[f"{prefix}qf{i}.{rest}"] = value


def _stacked_keys(
    module: BatchedCritic, state: dict[str, Any], prefix: str, local_metadata: Any, strict: bool, *args: Any
) -> None:
    """Load pre-hook: SB3's ``qf{i}.{k}.*`` entries -> the stacked ``q_nets.*`` ones (the inverse of the above)."""
    ours = {k[len(prefix) + 2 :]: k for k in state if k.startswith(f"{prefix}qf")}
    stacked = module.q_nets.stacked_state({k: state[full] for k, full in ours.items()})
    if stacked:
        for full in ours.values():
            del state[full]
        state.update({f"{prefix}q_nets.{k}": v for k, v in stacked.items()})


class BatchedTD3Policy(TD3Policy):
    """
    SB3's ``TD3Policy`` with a :class:`BatchedCritic` (every ``TD3Policy`` argument, same ``state_dict`` keys) and
    an optional LayerNorm in the Q heads.

    :param critic_layer_norm: LayerNorm after each hidden layer of the Q heads (off: SB3's critic, batched).
    :param kwargs: ``TD3Policy``'s arguments (``net_arch``, ``activation_fn``, ``n_critics``,
        ``share_features_extractor``, ``features_extractor_class``, ...).
    """

    def __init__(self, *args: Any, critic_layer_norm: bool = False, **kwargs: Any):
        self.critic_layer_norm = critic_layer_norm
        super().__init__(*args, **kwargs)

    def make_critic(self, features_extractor: BaseFeaturesExtractor | None = None) -> BatchedCritic:
        critic_kwargs = self._update_features_extractor(self.critic_kwargs, features_extractor)
        return BatchedCritic(**critic_kwargs, layer_norm=self.critic_layer_norm).to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "critic_layer_norm": self.critic_layer_norm}


BatchedMlpPolicy = BatchedTD3Policy
