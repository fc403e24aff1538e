"""Gradient-norm clipping for any SB3 TD3 (FTRL clips at 0.5): :class:`GradientClippingCallback`."""

from __future__ import annotations

from typing import Any

import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from torch.utils.hooks import RemovableHandle

from sb3_vlm._validation import check_positive

__all__ = ["GradientClippingCallback", "clip_before_step"]


def clip_before_step(optimizer: th.optim.Optimizer, max_norm: float) -> RemovableHandle:
    """
    Clip the global L2 norm of ``optimizer``'s gradients to ``max_norm`` before each of its steps.

    :param optimizer: Any torch optimizer.
    :param max_norm: Largest gradient norm (> 0).
    :return: The hook's handle (``.remove()`` undoes it).
    """
    check_positive(max_norm, "max_norm", owner="clip_before_step")

    def hook(opt: th.optim.Optimizer, args: Any, kwargs: Any) -> None:
        params = [p for group in opt.param_groups for p in group["params"] if p.grad is not None]
        th.nn.utils.clip_grad_norm_(params, max_norm)

    return optimizer.register_step_pre_hook(hook)


class GradientClippingCallback(BaseCallback):
    """
    Clip the actor's and the critic's gradient norms at ``max_norm`` for the duration of ``learn``, through optimizer
    step pre-hooks (:func:`clip_before_step`). SB3's ``TD3`` has no ``max_grad_norm`` argument; this works with
    ``TD3`` and :class:`~sb3_vlm.td3.td3.VLMTD3` alike.

    :param max_norm: Largest global gradient norm of each optimizer step (FTRL: 0.5).
    """

    def __init__(self, max_norm: float = 0.5, verbose: int = 0):
        super().__init__(verbose)
        self.max_norm = check_positive(max_norm, "max_norm", owner="GradientClippingCallback")
        self._handles: list[RemovableHandle] = []

    def _on_training_start(self) -> None:
        # Optimizers are looked up now, not at init: loading a model or resuming builds new ones.
        policy = self.model.policy
        for name in ("actor", "critic"):
            module = getattr(policy, name, None)
            if module is None or getattr(module, "optimizer", None) is None:
                raise TypeError(
                    f"GradientClippingCallback needs a TD3-style policy with {name}.optimizer, got {policy}"
                )
            self._handles.append(clip_before_step(module.optimizer, self.max_norm))

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
