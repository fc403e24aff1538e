"""TD3 that starts at the supervised policy (FTRL's recipe: SFT, then RL) instead of at a random actor:
:class:`SupervisedPrior`, ``mu(f) = tanh(atanh(u(f)) + r(f))`` with ``u`` the supervised head's (or flow expert's)
action and ``r`` a zero-initialised correction (docs/guide/supervised.md "TD3 from the supervised policy")."""

from __future__ import annotations

import numpy as np
import torch as th
from torch import nn

from sb3_vlm.flow.head import FlowMatchingHead
from sb3_vlm.model.extractor import VLMDPTExtractor

__all__ = ["SupervisedPrior", "has_supervised_head"]

_EDGE = 1e-3
"""The prior's actions stay ``_EDGE`` inside ``[-1, 1]`` (``atanh(1)`` is infinite)."""


def has_supervised_head(extractor: VLMDPTExtractor, action_dim: int) -> bool:
    """Whether ``extractor`` carries a supervised regression head (label statistics) for ``action_dim`` actions."""
    return extractor.param_mean is not None and extractor.dpt.num_params >= action_dim


class SupervisedPrior(nn.Module):
    """
    An actor network ``[B, 256] -> [B, A]`` in ``[-1, 1]``: the supervised head's (or flow expert's) action plus a
    learned pre-tanh correction (see the module docstring).

    The extractor and the flow expert are referenced, not registered: they are the policy's shared ones, so this
    module's ``parameters()`` (what TD3 polyak-averages into the target actor) are the correction's only, and the
    target uses the current head.

    :param squashed: SB3's actor network ``Sequential(..., Linear, Tanh)``; everything but the tanh becomes ``r``.
    :param extractor: The shared extractor with the supervised head (:func:`has_supervised_head`).
    :param low: ``[A]`` physical lower bounds of the actions (the planner's parameter table).
    :param high: ``[A]`` physical upper bounds.
    :param flow: The policy's flow-matching expert on the extractor's feature (normalised parameters, at least
        ``A`` per step; the first step of a chunk is used), or None: the extractor's regression head.
    """

    def __init__(
        self,
        squashed: nn.Sequential,
        extractor: VLMDPTExtractor,
        low: np.ndarray,
        high: np.ndarray,
        flow: FlowMatchingHead | None = None,
    ):
        super().__init__()
        if not isinstance(squashed[-1], nn.Tanh) or not isinstance(squashed[-2], nn.Linear):
            raise TypeError(f"SupervisedPrior needs an actor network ending in Linear, Tanh; got {squashed}")
        self.residual = squashed[:-1]
        nn.init.zeros_(self.residual[-1].weight)
        nn.init.zeros_(self.residual[-1].bias)
        self.action_dim = self.residual[-1].out_features
        if not has_supervised_head(extractor, self.action_dim):
            raise ValueError(f"SupervisedPrior: the extractor has no supervised head for {self.action_dim} actions")
        if flow is not None and flow.config.action_dim < self.action_dim:
            raise ValueError(
                f"SupervisedPrior: the flow expert predicts {flow.config.action_dim} parameters, the actor needs "
                f"{self.action_dim}"
            )
        # Not submodules (see the class docstring).
        self.__dict__["extractor"], self.__dict__["flow"] = extractor, flow
        low, high = np.asarray(low, dtype=np.float32), np.asarray(high, dtype=np.float32)
        if low.shape != (self.action_dim,) or high.shape != (self.action_dim,):
            raise ValueError(f"SupervisedPrior: low/high must be [{self.action_dim}], got {low.shape}, {high.shape}")
        self.register_buffer("center", th.from_numpy((high + low) / 2), persistent=False)
        self.register_buffer("half_range", th.from_numpy((high - low) / 2), persistent=False)

    def supervised_action(self, features: th.Tensor) -> th.Tensor:
        """``u(f)``: the supervised head's (or the flow expert's deterministic) parameters ``[B, A]`` mapped to
        ``[-1, 1]`` (clamped inside)."""
        extractor: VLMDPTExtractor = self.__dict__["extractor"]
        flow: FlowMatchingHead | None = self.__dict__["flow"]
        if flow is None:
            normalized = extractor.dpt.mlp(features)
        else:
            normalized = flow.act(features)[:, : flow.config.action_dim]
        physical = extractor.denormalize(normalized)[:, : self.action_dim]
        return ((physical - self.center) / self.half_range).clamp(-1 + _EDGE, 1 - _EDGE)

    def forward(self, features: th.Tensor) -> th.Tensor:
        """``[B, 256]`` features -> ``[B, A]`` actions in ``[-1, 1]``."""
        return th.tanh(th.atanh(self.supervised_action(features)) + self.residual(features))
