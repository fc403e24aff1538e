"""PreTanhPenaltyCallback: the gradient it adds is that of coef * mean(pre**2), and with it the APPLR zoo file's TD3
no longer pins its parameters at the bounds (it did within ~500 steps: every dimension at +-1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from stable_baselines3 import TD3
from stable_baselines3.common.callbacks import CallbackList

from envs import BarnNavVecEnv
from envs.probes import QuadraticBandit
from sb3_vlm.callbacks import PreTanhPenaltyCallback
from sb3_vlm.workflows.training import build_model
from sb3_vlm.zoo import default_conf, load_zoo_config

pytestmark = pytest.mark.usefixtures("one_thread")


def test_hook_gradient_equals_the_explicit_penalty() -> None:
    model = TD3("MlpPolicy", QuadraticBandit(dim=3), policy_kwargs=dict(net_arch=[16, 16]), seed=0)
    callback = PreTanhPenaltyCallback(coef=0.7)
    callback.init_callback(model)
    obs = th.randn(5, 1)
    actor = model.actor

    def gradients(explicit: bool) -> list[th.Tensor]:
        actor.zero_grad()
        pre = actor.mu[:-1](actor.extract_features(obs, actor.features_extractor))
        loss = -model.critic.q1_forward(obs, th.tanh(pre)).mean()
        if explicit:
            loss = loss + 0.7 * pre.pow(2).mean()
        else:  # through the hooked module: the same actor, its own forward
            loss = -model.critic.q1_forward(obs, actor(obs)).mean()
        loss.backward()
        return [p.grad.clone() for p in actor.parameters()]

    callback.on_training_start(locals(), globals())
    hooked = gradients(explicit=False)
    callback.on_training_end()
    plain_after_removal = gradients(explicit=False)
    explicit = gradients(explicit=True)
    for h, e in zip(hooked, explicit, strict=True):
        th.testing.assert_close(h, e)
    assert not all(th.allclose(h, p) for h, p in zip(hooked, plain_after_removal, strict=True))


def _saturation(model: TD3, env: BarnNavVecEnv) -> float:
    env.seed(123)
    obs = env.reset()
    actions = model.policy.scale_action(model.predict(obs, deterministic=True)[0])
    return float(np.mean(np.abs(actions) > 0.99))


@pytest.mark.parametrize("with_penalty", [False, True])
def test_applr_zoo_actor_saturates_without_the_penalty_only(with_penalty: bool) -> None:
    """The APPLR zoo file's settings, 16 generated-world envs, 1,000 steps after a 256-step warm-up: without the
    penalty most action entries sit at a bound; with the zoo file's callbacks (which hold the penalty) few do."""
    cfg = load_zoo_config(default_conf("applr"), hyperparams={"learning_starts": 256})
    env = BarnNavVecEnv(cfg.n_envs, **cfg.env_kwargs)
    env.seed(0)
    model = build_model(cfg, env, seed=0, tensorboard_log=None, verbose=0)
    callbacks = [c for c in cfg.callbacks() if with_penalty or not isinstance(c, PreTanhPenaltyCallback)]
    assert with_penalty == any(isinstance(c, PreTanhPenaltyCallback) for c in callbacks)
    model.learn(1_300, callback=CallbackList(callbacks))
    saturation = _saturation(model, BarnNavVecEnv(32, **cfg.env_kwargs))
    if with_penalty:
        assert saturation < 0.2, saturation
    else:
        assert saturation > 0.5, saturation


def test_a_supervised_prior_is_penalised_on_its_correction_only(tmp_path) -> None:
    """TD3 from a supervised checkpoint: mu = tanh(atanh(u) + r); the penalty's gradient is that of
    coef * mean(r**2), so at step 0 (r = 0) it adds nothing and it never pulls the supervised action u."""
    from _laser_env import image_env
    from _tiny_ckpt import build_tiny_checkpoint

    from sb3_vlm import VLMTD3
    from sb3_vlm.td3.prior import SupervisedPrior

    ckpt = build_tiny_checkpoint(tmp_path / "sft", num_params=7, use_history=False)
    model = VLMTD3("VLMPolicy", image_env(), policy_kwargs=dict(backbone=str(ckpt.path)), buffer_size=64, seed=0)
    mu = model.actor.mu
    assert isinstance(mu, SupervisedPrior)
    th.nn.init.normal_(mu.residual[-1].weight, std=0.05)  # a correction learned so far
    features = th.randn(4, mu.residual[0].in_features)
    callback = PreTanhPenaltyCallback(coef=0.5)
    callback.init_callback(model)

    def gradients(hooked: bool) -> list[th.Tensor]:
        mu.zero_grad()
        loss = mu(features).sum()
        if not hooked:
            loss = loss + 0.5 * mu.residual(features).pow(2).mean()
        loss.backward()
        return [p.grad.clone() for p in mu.residual.parameters()]

    explicit = gradients(hooked=False)
    callback.on_training_start(locals(), globals())
    hooked = gradients(hooked=True)
    callback.on_training_end()
    for h, e in zip(hooked, explicit, strict=True):
        th.testing.assert_close(h, e)
