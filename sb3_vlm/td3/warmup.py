"""Critic warm-up for TD3 fine-tuning from a supervised policy (FTRL: RL must not undo the SFT policy).

At the start of TD3 the critic is random, so the actor's gradient ``dQ/da`` points nowhere in particular; from a
supervised start every such update moves the policy away from what it already does well (measured: a supervised
policy at nav metric 0.25 fell to 0.11 after 9 actor updates). :class:`CriticWarmup` lets the critic learn the Q of
the current policy first: until the warm-up ends, an optimizer step pre-hook drops the actor's gradients, so its
optimizer skips every parameter (Adam keeps no state for them either). Works with ``TD3`` and ``VLMTD3``, from an
rl-zoo3 file::

    callback:
      - sb3_vlm.td3.warmup.CriticWarmup:
          fraction: 0.25
"""

from __future__ import annotations

from typing import Any

import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from torch.utils.hooks import RemovableHandle

__all__ = ["CriticWarmup"]


class CriticWarmup(BaseCallback):
    """
    No actor update before ``steps`` env steps (or ``fraction`` of the ``learn`` budget); the critic trains as usual.
    Logged as ``train/actor_frozen`` (1 during the warm-up).

    :param steps: Env steps (over all envs, counted by ``model.num_timesteps``) of the warm-up.
    :param fraction: Or: this fraction of the ``total_timesteps`` given to ``learn`` (exactly one of the two).
    """

    def __init__(self, steps: int | None = None, fraction: float | None = None, verbose: int = 0):
        super().__init__(verbose)
        if (steps is None) == (fraction is None):
            raise ValueError(f"CriticWarmup: give exactly one of steps and fraction, got {steps=}, {fraction=}")
        if steps is not None and steps < 0:
            raise ValueError(f"CriticWarmup: steps must be >= 0, got {steps}")
        if fraction is not None and not 0.0 <= fraction <= 1.0:
            raise ValueError(f"CriticWarmup: fraction must be in [0, 1], got {fraction}")
        self.steps, self.fraction = steps, fraction
        self.until = 0
        self._handle: RemovableHandle | None = None

    def _on_training_start(self) -> None:
        if self.steps is not None:
            self.until = self.steps
        else:
            # On a resumed run total_timesteps is what remains; the warm-up counts from this learn call's start.
            self.until = self.num_timesteps + round(self.fraction * self.locals["total_timesteps"])
        self._handle = self.model.policy.actor.optimizer.register_step_pre_hook(self._drop_gradients)

    def _drop_gradients(self, optimizer: th.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self.model.num_timesteps < self.until:
            for group in optimizer.param_groups:
                for param in group["params"]:
                    param.grad = None

    def _on_step(self) -> bool:
        self.logger.record("train/actor_frozen", float(self.num_timesteps < self.until))
        return True

    def _on_training_end(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
