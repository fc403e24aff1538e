"""A critic warm-up before the first actor update, for TD3 started from a supervised policy:
:class:`CriticWarmupCallback`."""

from __future__ import annotations

from typing import Any

import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from torch.utils.hooks import RemovableHandle

__all__ = ["CriticWarmupCallback"]


class CriticWarmupCallback(BaseCallback):
    """
    No actor update before ``steps`` env steps (or ``fraction`` of the ``learn`` budget); the critic trains as usual,
    learning the Q of the current policy first. Until the warm-up ends, an optimizer step pre-hook drops the actor's
    gradients, so its optimizer skips every parameter (Adam keeps no state for them either). Logged as
    ``train/actor_frozen`` (1 during the warm-up).

    :param steps: Env steps (over all envs, counted by ``model.num_timesteps``) of the warm-up.
    :param fraction: Or: this fraction of the run's budget, ``model._total_timesteps`` (on a resumed or continued
        run the steps already taken count, as for the exploration-noise schedule; exactly one of the two).
    """

    def __init__(self, steps: int | None = None, fraction: float | None = None, verbose: int = 0):
        super().__init__(verbose)
        if (steps is None) == (fraction is None):
            raise ValueError(f"CriticWarmupCallback: give exactly one of steps and fraction, got {steps=}, {fraction=}")
        if steps is not None and steps < 0:
            raise ValueError(f"CriticWarmupCallback: steps must be >= 0, got {steps}")
        if fraction is not None and not 0.0 <= fraction <= 1.0:
            raise ValueError(f"CriticWarmupCallback: fraction must be in [0, 1], got {fraction}")
        self.steps, self.fraction = steps, fraction
        self.until = 0
        self._handle: RemovableHandle | None = None

    def _on_training_start(self) -> None:
        if self.steps is not None:
            self.until = self.steps
        else:
            # learn() has made total_timesteps the whole budget (num_timesteps + what remains on a resumed run), so
            # a run resumed after a kill keeps the warm-up end of the unbroken run.
            self.until = round(self.fraction * self.locals["total_timesteps"])
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
