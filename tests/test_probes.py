"""Probe environments with a known optimum (envs.probes): stock SB3 TD3 at the APPLR zoo file's settings must find
each optimum, so a BarnNav run that does not learn is not explained by the algorithm's update alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from stable_baselines3 import TD3
from stable_baselines3.common.env_util import make_vec_env

from envs.probes import BarnNavBandit, ContextualBandit, QuadraticBandit, TruncatedChain
from sb3_vlm.zoo import default_conf, load_zoo_config
from tests._paths import BARN_DIR, needs_barn

pytestmark = pytest.mark.usefixtures("one_thread")


def zoo_td3(env_fn, n_envs: int = 16, seed: int = 0, **overrides) -> TD3:
    """Stock SB3 TD3 with the APPLR zoo file's hyper-parameters (and noise) on ``n_envs`` copies of ``env_fn()``;
    no callback, no wrapper of ours."""
    cfg = load_zoo_config(default_conf("applr"))
    env = make_vec_env(env_fn, n_envs=n_envs, seed=seed)
    kwargs = {**cfg.algo_kwargs, **overrides}
    return TD3(env=env, action_noise=cfg.action_noise(env.action_space.shape[0]), seed=seed, **kwargs)


def test_quadratic_bandit_converges_inside_the_box() -> None:
    model = zoo_td3(QuadraticBandit)
    model.learn(3_000)
    action = model.predict(np.zeros((1, 1), dtype=np.float32), deterministic=True)[0][0]
    target = QuadraticBandit().target
    assert np.abs(action - target).max() < 0.1, (action, target)  # not pinned at a bound


def test_contextual_bandit_reads_its_observation() -> None:
    model = zoo_td3(ContextualBandit)
    model.learn(4_000)
    env = ContextualBandit()
    obs = np.stack([env.reset(seed=i)[0] for i in range(64)])
    action = model.predict(obs, deterministic=True)[0]
    assert np.abs(action - env.optimum(obs)).mean() < 0.1
    assert np.corrcoef(action.ravel(), env.optimum(obs).ravel())[0, 1] > 0.9


def test_truncation_is_bootstrapped_with_n_step_returns() -> None:
    """Time-limit truncation is not a termination: the value of the chain's one state approaches
    1 / (1 - gamma) = 20 (gamma 0.95), far above the ~2.9 of truncation taken as the end."""
    model = zoo_td3(lambda: TruncatedChain(limit=5), learning_starts=256, tau=0.02)  # a faster target: fewer steps
    model.learn(6_000)
    with th.no_grad():
        q = model.critic.q1_forward(th.zeros(1, 1), th.zeros(1, 1)).item()
    assert q > 10, q


@needs_barn
@pytest.mark.slow
def test_barn_bandit_finds_a_constant_better_than_the_default() -> None:
    """On the validation worlds, with the zoo file's reward, the learned constant beats default DWA's return."""
    cfg = load_zoo_config(default_conf("applr"))
    kwargs = dict(barn_dir=BARN_DIR, worlds="fit", **cfg.env_kwargs)
    model = zoo_td3(lambda: BarnNavBandit(gamma=cfg.algo_kwargs["gamma"], **kwargs), learning_starts=256)
    model.learn(3_000)
    learned = model.predict(np.zeros((1, 1), dtype=np.float32), deterministic=True)[0][0]
    env = BarnNavBandit(gamma=cfg.algo_kwargs["gamma"], **{**kwargs, "worlds": "val"})
    default = env.batch.params.default

    def mean_return(action: np.ndarray) -> float:
        env.reset(seed=0)
        return float(np.mean([env.step(action)[1] for _ in range(100)]))

    assert mean_return(learned) > mean_return(default), learned
