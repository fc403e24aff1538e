"""A penalty on the TD3 actor's pre-tanh outputs, so it cannot pin its parameters at the bounds:
:class:`PreTanhPenaltyCallback`."""

from __future__ import annotations

import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from torch import nn
from torch.utils.hooks import RemovableHandle

from sb3_vlm._validation import check_positive
from sb3_vlm.td3.prior import SupervisedPrior

__all__ = ["PreTanhPenaltyCallback"]


class PreTanhPenaltyCallback(BaseCallback):
    """
    Adds ``coef * mean(pre**2)`` to the TD3 actor's loss, ``pre`` being the actor's pre-tanh outputs ``[B, A]`` (with
    a supervised prior: its correction ``r``, which also holds the actor near the supervised policy). Applied as a
    gradient hook while the actor is differentiated, so it works with any TD3 training loop (stock ``TD3``,
    :class:`~sb3_vlm.td3.td3.VLMTD3`, rl-zoo3) and adds nothing to the saved parameters; why TD3 needs it on
    BarnNav: docs/learning.md.
    Logs ``train/pre_tanh_rms`` (root mean square of ``pre`` over the actor updates since the last log; tanh is
    within 4 % of its bound beyond 2).

    :param coef: Weight of the penalty (> 0). Unlike tanh's, its gradient does not vanish at the bounds, so the actor
        comes back as soon as the critic stops pushing; an output settles where ``|dQ/da| (1 - tanh(pre)**2)``
        equals ``2 * coef * |pre| / A``.
    """

    def __init__(self, coef: float = 1.0, verbose: int = 0):
        super().__init__(verbose)
        self.coef = check_positive(coef, "coef", owner="PreTanhPenaltyCallback")
        self._handles: list[RemovableHandle] = []
        self._sum_sq, self._count = th.zeros(()), 0

    def _on_training_start(self) -> None:
        mu = self.model.actor.mu
        if isinstance(mu, nn.Sequential) and isinstance(mu[-1], nn.Tanh):
            self._handles = [mu[-1].register_forward_pre_hook(lambda module, inputs: self._penalise(inputs[0]))]
        elif isinstance(mu, SupervisedPrior):  # the correction r, added to atanh(u) before the tanh
            self._handles = [mu.residual.register_forward_hook(lambda module, inputs, out: self._penalise(out))]
        else:
            name = type(mu).__name__
            raise TypeError(
                f"PreTanhPenaltyCallback needs an actor mu ending in nn.Tanh or a SupervisedPrior, got {name}"
            )

    def _penalise(self, pre: th.Tensor) -> None:
        """Register the penalty's gradient on ``pre`` ``[B, A]`` when the actor is being differentiated."""
        if not pre.requires_grad:  # acting, or the target actor: nothing to penalise
            return
        held = pre.detach()
        scale = 2.0 * self.coef / pre.numel()  # d/dpre of coef * mean(pre**2)
        pre.register_hook(lambda grad: grad + scale * held)
        self._sum_sq = self._sum_sq + held.pow(2).mean().cpu()
        self._count += 1

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        if self._count:
            self.logger.record("train/pre_tanh_rms", float(self._sum_sq / self._count) ** 0.5)
            self._sum_sq, self._count = th.zeros(()), 0

    def _on_training_end(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
