"""Exploration-noise schedule, actor-saturation monitor, gradient clipping and critic warm-up callbacks on real SB3
TD3 training over the real simulator."""

import logging

import numpy as np
import pytest
import torch as th
from stable_baselines3 import TD3
from stable_baselines3.common.noise import NormalActionNoise, VectorizedActionNoise

import envs
from sb3_vlm.callbacks import (
    ActorSaturationMonitorCallback,
    CriticWarmupCallback,
    ExplorationNoiseScheduleCallback,
    GradientClippingCallback,
    PreTanhPenaltyCallback,
)
from sb3_vlm.zoo import default_conf, load_zoo_config


def _td3(noise_std: float = 0.2, n_envs: int = 2, learning_starts: int = 32) -> TD3:
    env = envs.BarnNavVecEnv(n_envs, observation="laser")
    noise = NormalActionNoise(np.zeros(7), noise_std * np.ones(7))
    return TD3("MlpPolicy", env, action_noise=noise, learning_starts=learning_starts, batch_size=32,
               policy_kwargs=dict(net_arch=[32, 32]), seed=0)  # fmt: skip


def _sigmas(model: TD3) -> np.ndarray:
    """Standard deviations ``[n_envs, 7]`` of the per-env noises SB3 made from ours."""
    assert isinstance(model.action_noise, VectorizedActionNoise)
    return np.stack([noise._sigma for noise in model.action_noise.noises])


def test_the_noise_schedule_decays_linearly_to_its_end_value():
    model = _td3()
    schedule = ExplorationNoiseScheduleCallback(end=0.05, decay_steps=80)
    model.learn(40, callback=schedule)
    assert schedule.start == pytest.approx(0.2)
    np.testing.assert_allclose(_sigmas(model), 0.2 + (40 / 80) * (0.05 - 0.2), rtol=1e-6)
    model.learn(60, callback=schedule, reset_num_timesteps=False)
    np.testing.assert_allclose(_sigmas(model), 0.05)  # reached at step 80, then kept
    assert model.logger.name_to_value.get("train/Exploration_noise", 0.05) == pytest.approx(0.05)


def test_a_resumed_model_continues_the_schedule_from_its_start(tmp_path):
    model = _td3()
    model.learn(40, callback=ExplorationNoiseScheduleCallback(end=0.05, decay_steps=80))
    model.save(tmp_path / "model.zip")
    resumed = TD3.load(tmp_path / "model.zip", env=model.get_env())
    schedule = ExplorationNoiseScheduleCallback(end=0.05, decay_steps=80)  # as the zoo file builds it again: no start
    resumed.learn(20, callback=schedule, reset_num_timesteps=False)
    assert schedule.start == pytest.approx(0.2)  # not the decayed 0.125 the saved noise had
    np.testing.assert_allclose(_sigmas(resumed), 0.2 + (60 / 80) * (0.05 - 0.2), rtol=1e-6)


def test_the_schedule_spans_the_learn_budget_by_default():
    model = _td3(n_envs=2)
    model.learn(20, callback=ExplorationNoiseScheduleCallback(end=0.0))
    np.testing.assert_allclose(_sigmas(model), 0.0, atol=1e-12)


def test_the_schedule_needs_gaussian_noise():
    model = _td3()
    model.action_noise = None
    with pytest.raises(ValueError, match="needs Gaussian action noise"):
        model.learn(4, callback=ExplorationNoiseScheduleCallback(end=0.05))


def test_a_saturated_actor_is_reported(caplog):
    model = _td3(learning_starts=10_000)  # no gradient steps: the actor stays as set
    monitor = ActorSaturationMonitorCallback(log_freq=1, window=8)
    model.learn(8, callback=monitor)
    assert monitor.last is not None and monitor.last.mean() < 0.5  # a fresh actor is not at its bounds
    with th.no_grad():
        model.actor.mu[-2].bias.fill_(10.0)  # pre-tanh outputs far beyond the bounds: every action at +1
    with caplog.at_level(logging.WARNING, logger="sb3_vlm.callbacks.saturation"):
        model.learn(8, callback=monitor, reset_num_timesteps=False)
    np.testing.assert_array_equal(monitor.last, np.ones(7))
    assert model.logger.name_to_value["train/Actor_saturation"] == 1.0
    assert "actor saturated" in caplog.text


@pytest.mark.parametrize(
    "policy, end, kinds",
    [
        ("applr", 0.05, [ExplorationNoiseScheduleCallback, PreTanhPenaltyCallback, ActorSaturationMonitorCallback]),
        (
            "vlm",
            0.01,
            [
                ExplorationNoiseScheduleCallback,
                GradientClippingCallback,
                CriticWarmupCallback,
                PreTanhPenaltyCallback,
                ActorSaturationMonitorCallback,
            ],
        ),
    ],
)
def test_zoo_files_carry_the_schedule_the_penalty_and_the_monitor(policy, end, kinds):
    cfg = load_zoo_config(default_conf(policy))
    made = cfg.callbacks()
    assert [type(c) for c in made] == kinds
    assert made[0].end == end and made[0].start is None  # starts from the file's noise_std
    assert "callback" not in cfg.algo_kwargs


def test_gradient_clipping_bounds_every_optimizer_step_of_stock_td3():
    model = _td3(learning_starts=16)
    norms: list[float] = []

    def record(optimizer, args, kwargs):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norms.append(float(th.nn.utils.get_total_norm(grads)))

    class ClipThenRecord(GradientClippingCallback):
        def _on_training_start(self) -> None:
            super()._on_training_start()  # the clipping hooks first, then the recorders
            for module in (self.model.policy.actor, self.model.policy.critic):
                self._handles.append(module.optimizer.register_step_pre_hook(record))

    model.learn(48, callback=ClipThenRecord(max_norm=1e-3))
    assert len(norms) > 10 and max(norms) <= 1e-3 * (1 + 1e-4)
    # The hooks go with the callback: a later learn without it steps unclipped.
    norms.clear()
    model.policy.critic.optimizer.register_step_pre_hook(record)
    model.learn(32, reset_num_timesteps=False)
    assert norms and max(norms) > 1e-2


def test_critic_warmup_keeps_the_actor_until_its_end_while_the_critic_learns():
    model = _td3(learning_starts=16)
    actor = [p.detach().clone() for p in model.actor.parameters()]
    critic = [p.detach().clone() for p in model.critic.parameters()]
    warmup = CriticWarmupCallback(steps=64)
    model.learn(48, callback=warmup)
    assert all(th.equal(a, p) for a, p in zip(actor, model.actor.parameters(), strict=True))
    assert not all(th.equal(c, p) for c, p in zip(critic, model.critic.parameters(), strict=True))
    model.learn(64, callback=warmup, reset_num_timesteps=False)  # past step 64: the actor trains
    assert not all(th.equal(a, p) for a, p in zip(actor, model.actor.parameters(), strict=True))
    assert CriticWarmupCallback(fraction=0.5).fraction == 0.5


def test_critic_warmup_fraction_on_a_resumed_run_ends_where_the_unbroken_run_does():
    # A 128-step run with a half-run warm-up, killed at step 96 and resumed for its last 32 steps: learn() makes
    # total_timesteps 128 again, so the warm-up ended at step 64 and the actor goes on training (before the fix it
    # counted from the resume, froze the actor until step 160 and never let it train again).
    model = _td3(learning_starts=16)
    model.learn(96, callback=CriticWarmupCallback(fraction=0.5))
    actor = [p.detach().clone() for p in model.actor.parameters()]
    resumed = CriticWarmupCallback(fraction=0.5)
    model.learn(32, callback=resumed, reset_num_timesteps=False)
    assert resumed.until == 64
    assert not all(th.equal(a, p) for a, p in zip(actor, model.actor.parameters(), strict=True))
