"""SB3's TD3 with a leaner update: fused Adam, foreach polyak averaging, no critic weight gradients in the actor
step, one host sync per ``train`` call, optional bf16 autocast. Same results as ``TD3`` to float rounding in fp32."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch as th
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, Schedule
from stable_baselines3.td3.td3 import TD3
from torch.nn import functional as F

from sb3_vlm.td3.batched import BatchedMlpPolicy

__all__ = [
    "FastTD3",
    "bf16_autocast",
    "critic_only_parameters",
    "fast_optimizer_kwargs",
    "frozen",
    "polyak_update_foreach",
]

_FUSABLE = (th.optim.Adam, th.optim.AdamW)


def fast_optimizer_kwargs(policy_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """
    ``policy_kwargs`` with ``optimizer_kwargs["fused"] = True`` when the optimizer is Adam or AdamW (SB3's default)
    and the user chose neither ``fused`` nor ``foreach``: one kernel per step instead of ~10 passes over each tensor
    (the same update to float rounding).
    """
    kwargs = dict(policy_kwargs or {})
    optimizer_kwargs = dict(kwargs.get("optimizer_kwargs") or {})
    if kwargs.get("optimizer_class", th.optim.Adam) in _FUSABLE and not {"fused", "foreach"} & set(optimizer_kwargs):
        kwargs["optimizer_kwargs"] = {**optimizer_kwargs, "fused": True}
    return kwargs


def polyak_update_foreach(params: list[th.Tensor], target_params: list[th.Tensor], tau: float) -> None:
    """SB3's ``polyak_update`` (``target = (1 - tau) * target + tau * param``) as two foreach kernels."""
    with th.no_grad():
        th._foreach_mul_(target_params, 1 - tau)
        th._foreach_add_(target_params, params, alpha=tau)


def bf16_autocast(device: th.device, enabled: bool) -> th.autocast:
    """``torch.autocast`` to bfloat16 on ``device`` when ``enabled`` (a no-op context otherwise)."""
    return th.autocast(device.type, th.bfloat16, enabled=enabled)


@contextmanager
def frozen(params: Iterable[th.Tensor]) -> Iterator[None]:
    """``requires_grad=False`` on ``params`` inside the block (graphs built there compute no gradient for them)."""
    changed = [p for p in params if p.requires_grad]
    for p in changed:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in changed:
            p.requires_grad_(True)


def critic_only_parameters(
    critic_optimizer: th.optim.Optimizer, actor_optimizer: th.optim.Optimizer
) -> list[th.Tensor]:
    """Parameters the critic optimizer steps and the actor optimizer does not (a shared extractor is the actor's)."""
    actor = {id(p) for group in actor_optimizer.param_groups for p in group["params"]}
    return [p for group in critic_optimizer.param_groups for p in group["params"] if id(p) not in actor]


class FastTD3(TD3):
    """
    SB3's ``TD3`` with a faster ``train``; everything else (``learn``, callbacks, save/load, rl-zoo3 arguments) is
    ``TD3``'s. In fp32 the update is stock TD3's to float rounding (``tests/test_fast_td3.py``):

    * Adam/AdamW run ``fused=True`` unless ``policy_kwargs["optimizer_kwargs"]`` chooses (see
      :func:`fast_optimizer_kwargs`);
    * polyak averaging is two foreach kernels for all target tensors;
    * the actor step builds no gradient for the critic's own weights (SB3 computes them, then the next critic step
      zeroes them);
    * losses stay tensors until one host sync at the end of ``train``;
    * ``bf16=True`` (opt-in) runs forward and backward passes under ``torch.autocast(dtype=bfloat16)`` with fp32
      weights and optimizer states: several times faster matrix products on CPUs with AMX/avx512_bf16, not the same
      numbers.

    Policies: SB3's (``"MlpPolicy"``, ``"CnnPolicy"``, ``"MultiInputPolicy"``; a saved model is a plain SB3 TD3 zip
    that ``TD3.load`` reads) or ``"BatchedMlpPolicy"`` (:class:`~sb3_vlm.td3.batched.BatchedTD3Policy`: both Q
    heads in one batched module, optional ``critic_layer_norm``; ``FastTD3.load``, ``TD3.load`` and
    ``sb3_vlm.formats.sb3_zip.load_algorithm`` read its zips, with sb3-vlm installed).

    :param policy: Policy alias or class.
    :param env: The environment.
    :param learning_rate: Learning rate (float or schedule).
    :param bf16: Autocast the update's passes to bfloat16 (opt-in; changes the numbers).
    :param policy_kwargs: Policy arguments (``optimizer_kwargs`` gains ``fused=True``, see above).
    :param kwargs: Every other ``TD3`` argument.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        **TD3.policy_aliases,
        "BatchedMlpPolicy": BatchedMlpPolicy,
    }

    def __init__(
        self,
        policy: str | type[BasePolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 1e-3,
        bf16: bool = False,
        policy_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        self.bf16 = bf16
        super().__init__(policy, env, learning_rate, policy_kwargs=fast_optimizer_kwargs(policy_kwargs), **kwargs)

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        self.policy.set_training_mode(True)  # dropout / batch norm of the online networks
        self._update_learning_rate([self.actor.optimizer, self.critic.optimizer])
        critic_only = critic_only_parameters(self.critic.optimizer, self.actor.optimizer)
        # (online, target) lists, averaged in this order: a shared extractor is in both and averaged twice, as in TD3
        polyak_pairs = [
            (list(self.critic.parameters()), list(self.critic_target.parameters())),
            (list(self.actor.parameters()), list(self.actor_target.parameters())),
        ]
        norm_stats = self.critic_batch_norm_stats + self.actor_batch_norm_stats
        norm_stats_target = self.critic_batch_norm_stats_target + self.actor_batch_norm_stats_target

        actor_losses, critic_losses = [], []
        for _ in range(gradient_steps):
            self._n_updates += 1
            # 1. a replay batch
            replay_data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            # 2. TD target
            target_q_values = self._target_q_values(replay_data)
            with bf16_autocast(self.device, self.bf16):
                # 3. critic step on the summed MSE of the Q heads
                current_q_values = self.critic(replay_data.observations, replay_data.actions)
                critic_loss = sum(F.mse_loss(q.float(), target_q_values.float()) for q in current_q_values)
            assert isinstance(critic_loss, th.Tensor)
            critic_losses.append(critic_loss.detach())
            self.critic.optimizer.zero_grad()
            critic_loss.backward()
            self.critic.optimizer.step()
            # 4. every policy_delay steps: actor step, then polyak averaging of both target networks
            if self._n_updates % self.policy_delay == 0:
                # The critic's own weights get no gradient here (TD3 zeroes them before its next critic step)
                with frozen(critic_only), bf16_autocast(self.device, self.bf16):
                    obs = replay_data.observations
                    actor_loss = -self.critic.q1_forward(obs, self.actor(obs)).float().mean()
                actor_losses.append(actor_loss.detach())
                self.actor.optimizer.zero_grad()
                actor_loss.backward()
                self.actor.optimizer.step()
                for online, targets in polyak_pairs:
                    polyak_update_foreach(online, targets, self.tau)
                if norm_stats:  # batch-norm running statistics are copied, not averaged
                    th._foreach_copy_(norm_stats_target, norm_stats)

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        # 5. one host sync for the losses of the whole call
        losses = th.stack([th.stack(critic_losses).mean(), *([th.stack(actor_losses).mean()] if actor_losses else [])])
        values = losses.tolist()
        self.logger.record("train/critic_loss", values[0])
        if actor_losses:
            self.logger.record("train/actor_loss", values[1])

    @th.no_grad()
    def _target_q_values(self, replay_data: Any) -> th.Tensor:
        """Target actor + clipped noise (same RNG draws as TD3), min of the target Qs; n-step returns bring their own
        discount."""
        discounts = replay_data.discounts if replay_data.discounts is not None else self.gamma
        with bf16_autocast(self.device, self.bf16):
            noise = replay_data.actions.clone().data.normal_(0, self.target_policy_noise)
            noise = noise.clamp(-self.target_noise_clip, self.target_noise_clip)
            next_actions = (self.actor_target(replay_data.next_observations) + noise).clamp(-1, 1)
            next_q_values = th.cat(self.critic_target(replay_data.next_observations, next_actions), dim=1)
            next_q_values, _ = th.min(next_q_values, dim=1, keepdim=True)
            return replay_data.rewards + (1 - replay_data.dones) * discounts * next_q_values
