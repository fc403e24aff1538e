"""TD3 for the shared-backbone VLM policy: separate actor/critic learning rates, heads-only polyak, NaN guard."""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, Schedule
from stable_baselines3.common.utils import FloatSchedule, update_learning_rate
from stable_baselines3.td3.td3 import TD3
from torch.nn import functional as F

from sb3_vlm.model.cache import CacheStats
from sb3_vlm.td3.fast import (
    bf16_autocast,
    critic_only_parameters,
    fast_optimizer_kwargs,
    frozen,
    polyak_update_foreach,
)
from sb3_vlm.td3.policies import VLMTD3Policy

__all__ = ["VLMTD3"]

SelfVLMTD3 = TypeVar("SelfVLMTD3", bound="VLMTD3")


class VLMTD3(TD3):
    """
    TD3 with a :class:`VLMTD3Policy` (FTRL's TD3 fine-tuning, docs/compat/ftrl.md §4.2, in SB3's loop).

    Differences from SB3's ``TD3``:

    * one gradient step runs the shared backbone once on ``obs`` and once on ``next_obs``; actor, critic and both
      targets reuse those features (the critic and the targets see them detached); with the policy's
      ``critic_dpt``, the critics pool the detached hidden states with their own DPT copy (trained by the critic
      optimizer, polyak-averaged into the target's);
    * polyak averaging touches only the small heads: the backbone has no target copy (averaging a tensor with itself
      in place would shrink it by ``1 - tau**2`` per update);
    * ``actor_lr`` and ``critic_lr`` (floats or schedules of the remaining progress) drive the two optimizers;
    * an update whose loss or gradient norm is NaN/inf is skipped (the optimizer does not step) and counted in
      ``skipped_updates`` (logged as ``train/skipped_updates``);
    * optional gradient-norm clipping ``max_grad_norm`` (FTRL: 0.5);
    * optional TD3+BC regularisation ``bc_alpha`` (Fujimoto & Gu 2021): the actor minimises
      ``-alpha * Q(s, mu(s)) / mean|Q| + mean((mu(s) - a)^2)`` over replayed ``(s, a)``, so it leaves the actions
      it has been taking (a supervised start's, early on) only where the critic clearly prefers others; the
      behaviour-cloning term is logged as ``train/bc_loss``;
    * with the policy's feature cache (``policy_kwargs=dict(feature_cache_bytes=...)``, frozen VLM), replayed
      observations usually skip the backbone altogether; ``train/cache_hit_rate`` (lookups of the last ``train``
      call), ``train/cache_hits``, ``train/cache_misses``, ``train/cache_evictions``, ``train/cache_invalidations``,
      ``train/cache_entries`` and ``train/cache_bytes`` (totals) are logged;
    * the update runs :class:`~sb3_vlm.td3.fast.FastTD3`'s way: fused Adam (unless ``optimizer_kwargs`` chooses),
      foreach polyak, no critic weight gradients in the actor step, losses synced once per ``train``, and opt-in
      ``bf16`` autocast (fp32 weights; not the same numbers).

    :param policy: ``"VLMPolicy"`` or :class:`VLMTD3Policy` (subclass).
    :param env: The environment (image or Dict image + velocity observations, Box actions).
    :param learning_rate: Fallback for ``actor_lr``/``critic_lr`` when they are None.
    :param actor_lr: Actor learning rate (head + trainable LoRA/DPT/history), float or schedule, or None.
    :param critic_lr: Critic learning rate (Q heads), float or schedule, or None.
    :param max_grad_norm: Clip each optimizer's gradient norm to this value, or None (no clipping).
    :param bc_alpha: TD3+BC's ``alpha`` (its paper: 2.5; smaller stays closer to the replayed actions), or None for
        TD3's plain ``-Q`` actor loss.
    :param buffer_size: Replay buffer size (FTRL: 200,000; images stay uint8).
    :param bf16: Autocast the update's passes (backbone misses, DPT, heads) to bfloat16 (opt-in).
    :param kwargs: Every other ``TD3`` argument (``batch_size``, ``learning_starts``, ``policy_kwargs``, ...).
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"VLMPolicy": VLMTD3Policy}
    policy: VLMTD3Policy

    def __init__(
        self,
        policy: str | type[VLMTD3Policy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 1e-3,
        actor_lr: float | Schedule | None = None,
        critic_lr: float | Schedule | None = None,
        max_grad_norm: float | None = None,
        bc_alpha: float | None = None,
        buffer_size: int = 200_000,
        bf16: bool = False,
        policy_kwargs: dict[str, Any] | None = None,
        _init_setup_model: bool = True,
        **kwargs: Any,
    ):
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ValueError(f"VLMTD3: max_grad_norm must be > 0 or None, got {max_grad_norm}")
        if bc_alpha is not None and not bc_alpha > 0:
            raise ValueError(f"VLMTD3: bc_alpha must be > 0 or None, got {bc_alpha}")
        self.actor_lr = actor_lr
        self.critic_lr = critic_lr
        self.max_grad_norm = max_grad_norm
        self.bc_alpha = bc_alpha
        self.skipped_updates = 0
        self.bf16 = bf16
        super().__init__(
            policy,
            env,
            learning_rate,
            buffer_size=buffer_size,
            policy_kwargs=fast_optimizer_kwargs(policy_kwargs),
            _init_setup_model=False,
            **kwargs,
        )
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        super()._setup_model()
        if not isinstance(self.policy, VLMTD3Policy):
            raise TypeError(f"VLMTD3 needs a VLMTD3Policy, got {type(self.policy).__name__}")
        self.actor_lr_schedule = FloatSchedule(self.learning_rate if self.actor_lr is None else self.actor_lr)
        self.critic_lr_schedule = FloatSchedule(self.learning_rate if self.critic_lr is None else self.critic_lr)
        progress = self._current_progress_remaining
        update_learning_rate(self.actor.optimizer, self.actor_lr_schedule(progress))
        update_learning_rate(self.critic.optimizer, self.critic_lr_schedule(progress))

    def _update_learning_rate(self, optimizers: list[th.optim.Optimizer] | th.optim.Optimizer) -> None:
        """Set the actor optimizer to ``actor_lr`` and the critic optimizer to ``critic_lr`` at the current progress."""
        progress = self._current_progress_remaining
        rates = {
            id(self.actor.optimizer): ("actor", self.actor_lr_schedule(progress)),
            id(self.critic.optimizer): ("critic", self.critic_lr_schedule(progress)),
        }
        for optimizer in optimizers if isinstance(optimizers, list) else [optimizers]:
            if id(optimizer) not in rates:
                raise ValueError("VLMTD3._update_learning_rate: got an optimizer that is neither actor's nor critic's")
            name, lr = rates[id(optimizer)]
            self.logger.record(f"train/{name}_learning_rate", lr)
            update_learning_rate(optimizer, lr)

    def _step(self, optimizer: th.optim.Optimizer, loss: th.Tensor) -> float | None:
        """Backward + (clipped) step, unless the loss or the gradient norm is not finite. Returns the gradient norm
        before clipping, or None if it did not step."""
        if not th.isfinite(loss):
            self.skipped_updates += 1
            return None
        params = [p for group in optimizer.param_groups for p in group["params"]]
        optimizer.zero_grad()
        loss.backward()
        grads = [p.grad for p in params if p.grad is not None]
        norm = th.nn.utils.get_total_norm(grads)
        if not th.isfinite(norm):
            optimizer.zero_grad()
            self.skipped_updates += 1
            return None
        if self.max_grad_norm is not None and norm > self.max_grad_norm:
            # Only ever scale down: before torch 2.9 clip_grads_with_norm_ does not clamp max_norm / norm at 1.
            th.nn.utils.clip_grads_with_norm_(params, self.max_grad_norm, norm)
        optimizer.step()
        return float(norm)

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate([self.actor.optimizer, self.critic.optimizer])
        cache = self.policy.features_extractor.feature_cache
        cache_before = None if cache is None else cache.stats()
        critic_only = critic_only_parameters(self.critic.optimizer, self.actor.optimizer)
        online = [*self.critic.parameters(), *self.actor.mu.parameters()]  # heads only: never the shared backbone
        targets = [*self.critic_target.parameters(), *self.actor_target.mu.parameters()]
        losses: dict[str, list[th.Tensor]] = {"actor": [], "bc": [], "critic": []}
        norms: dict[str, list[float | None]] = {"actor": [], "critic": []}
        for _ in range(gradient_steps):
            self._n_updates += 1
            # Sample the replay buffer
            replay_data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            update_actor = self._n_updates % self.policy_delay == 0
            # Target Q values: clipped noise on the target action, the smaller of the twin target critics
            target_q_values = self._target_q_values(replay_data)
            # Critic loss; the one backbone pass on obs builds a graph only when the actor is updated in this step
            with bf16_autocast(self.device, self.bf16):
                features, critic_features = self._features(replay_data.observations, self.critic, grad=update_actor)
                current_q_values = self.critic.q_values(critic_features, replay_data.actions)
                critic_loss = sum(F.mse_loss(q.float(), target_q_values) for q in current_q_values)
            assert isinstance(critic_loss, th.Tensor)
            losses["critic"].append(critic_loss.detach())
            norms["critic"].append(self._step(self.critic.optimizer, critic_loss))
            # Delayed actor update, then polyak averaging of the heads
            if update_actor:
                with frozen(critic_only):  # the actor loss trains the actor (and extractor), not the critic
                    actor_loss, bc_loss = self._actor_loss(features, critic_features, replay_data.actions)
                losses["actor"].append(actor_loss.detach())
                if bc_loss is not None:
                    losses["bc"].append(bc_loss.detach())
                norms["actor"].append(self._step(self.actor.optimizer, actor_loss))
                polyak_update_foreach(online, targets, self.tau)

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/skipped_updates", self.skipped_updates)
        for name, values in losses.items():
            if values:
                self.logger.record(f"train/{name}_loss", th.stack(values).mean().item())
        for name, grad_norms in norms.items():  # gradient norms before clipping, of the updates that stepped
            stepped = [v for v in grad_norms if v is not None]
            if stepped:
                self.logger.record(f"train/{name}_grad_norm", float(np.mean(stepped)))
        if cache is not None and cache_before is not None:
            self._log_cache(cache_before, cache.stats())

    def _features(self, obs: Any, critic: Any, grad: bool) -> tuple[th.Tensor, th.Tensor]:
        """The actor's features of ``obs`` and ``critic``'s, from one backbone pass (a graph only with ``grad``):
        a critic with its own DPT copy pools the hidden states itself, else it reads the actor's features,
        detached."""
        with th.set_grad_enabled(grad):
            if critic.dpt is None:
                features = self.policy.features(obs)
            else:
                hidden = self.policy.hidden(obs)
                features = self.policy.features_extractor.pool(*hidden)
        return features, features.detach() if critic.dpt is None else critic.own_features(*hidden)

    @th.no_grad()
    def _target_q_values(self, replay_data: Any) -> th.Tensor:
        """``r + (1 - done) * discount * min_i Q'_i(s', clip(mu'(s') + clipped noise))``."""
        discounts = replay_data.discounts if replay_data.discounts is not None else self.gamma
        with bf16_autocast(self.device, self.bf16):
            next_features, next_critic_features = self._features(
                replay_data.next_observations, self.critic_target, grad=False
            )
            noise = replay_data.actions.clone().data.normal_(0, self.target_policy_noise)
            noise = noise.clamp(-self.target_noise_clip, self.target_noise_clip)
            next_actions = (self.actor_target.mu(next_features) + noise).clamp(-1, 1)
            next_q_values = th.cat(self.critic_target.q_values(next_critic_features, next_actions), dim=1)
            next_q_values, _ = th.min(next_q_values.float(), dim=1, keepdim=True)
            return replay_data.rewards + (1 - replay_data.dones) * discounts * next_q_values

    def _actor_loss(
        self, features: th.Tensor, critic_features: th.Tensor, replayed: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor | None]:
        """``-Q1(s, mu(s))``, or with ``bc_alpha`` TD3+BC's loss (Q scaled by its mean magnitude, so alpha weighs the
        terms whatever the rewards, plus the MSE to the ``replayed`` actions); the BC term or None."""
        with bf16_autocast(self.device, self.bf16):
            actions = self.actor.mu(features)
            q_values = self.critic.q1(critic_features.detach(), actions).float()
            if self.bc_alpha is None:
                return -q_values.mean(), None
            scale = self.bc_alpha / q_values.abs().mean().detach().clamp_min(1e-6)
            bc_loss = F.mse_loss(actions.float(), replayed)
            return -scale * q_values.mean() + bc_loss, bc_loss

    def _log_cache(self, before: CacheStats, after: CacheStats) -> None:
        """Feature-cache counters: the hit rate of this ``train`` call's lookups, totals for the rest."""
        hits, misses = after.hits - before.hits, after.misses - before.misses
        if hits + misses:
            self.logger.record("train/cache_hit_rate", hits / (hits + misses))
        for name in ("hits", "misses", "evictions", "invalidations", "entries", "bytes"):
            self.logger.record(f"train/cache_{name}", getattr(after, name))
