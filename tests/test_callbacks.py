"""Training callbacks: bad arguments are refused by name; a resumed NavMetricsCallback keeps its eval schedule and its
best checkpoint."""

import json

import numpy as np
import pytest
from _laser_env import laser_env
from stable_baselines3 import TD3
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_vlm import callbacks
from sb3_vlm.callbacks import NavMetricsCallback, SafeCheckpointCallback, nav_metrics
from sb3_vlm.callbacks.checkpoint import STATE_JSON, save_training_checkpoint


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("ExplorationNoiseScheduleCallback", dict(end=-0.1), "standard deviations must be >= 0"),
        ("ExplorationNoiseScheduleCallback", dict(end=0.1, start=-1.0), "standard deviations must be >= 0"),
        ("ExplorationNoiseScheduleCallback", dict(end=0.1, decay_steps=0), "decay_steps"),
        ("ActorSaturationMonitorCallback", dict(log_freq=0), "log_freq"),
        ("ActorSaturationMonitorCallback", dict(window=0), "window"),
        ("ActorSaturationMonitorCallback", dict(threshold=1.5), "threshold"),
        ("CriticWarmupCallback", dict(), "exactly one of steps and fraction"),
        ("CriticWarmupCallback", dict(steps=10, fraction=0.5), "exactly one of steps and fraction"),
        ("CriticWarmupCallback", dict(steps=-1), "steps"),
        ("CriticWarmupCallback", dict(fraction=1.5), "fraction"),
        ("GradientClippingCallback", dict(max_norm=0.0), "max_norm"),
        ("PreTanhPenaltyCallback", dict(coef=0.0), "coef"),
        ("SafeCheckpointCallback", dict(save_path=".", save_freq=0), "save_freq"),
        ("NavMetricsCallback", dict(eval_env=object(), eval_freq=0), "eval_freq"),
    ],
)
def test_bad_arguments_are_refused_by_name(name: str, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        getattr(callbacks, name)(**kwargs)


@pytest.fixture
def resumed_model():
    """A small TD3 as ``sb3-vlm train --resume`` hands it to the callbacks: 1,000 steps already done."""
    model = TD3("MlpPolicy", DummyVecEnv([laser_env]), learning_starts=10, policy_kwargs=dict(net_arch=[8]))
    model.set_logger(configure(None, []))
    model.num_timesteps = 1000
    return model


def _drive(cb: NavMetricsCallback, model: TD3, steps: int) -> None:
    cb.init_callback(model)
    cb.on_training_start({}, {})
    for _ in range(steps):
        model.num_timesteps += 1
        cb.update_locals({"infos": [{}], "dones": np.array([False])})
        cb.on_step()


def test_resumed_nav_metrics_keeps_schedule_and_best(tmp_path, monkeypatch, resumed_model):
    best = tmp_path / "best"
    save_training_checkpoint(resumed_model, best, test_nav_metric=0.3)
    evaluations = []

    def fake_episodes(predict, venv, seed=None, options=None):
        evaluations.append(resumed_model.num_timesteps)
        return [{"status": "collision", "nav_metric": 0.1, "time": 5.0}]

    monkeypatch.setattr(nav_metrics, "run_episodes", fake_episodes)
    cb = NavMetricsCallback(eval_env=object(), eval_freq=100, best_path=best)  # type: ignore[arg-type]
    _drive(cb, resumed_model, 250)

    assert evaluations == [1100, 1200]  # not at every step from 100 up to 1,000
    assert cb.best_nav_metric == 0.3
    assert json.loads((best / STATE_JSON).read_text())["test_nav_metric"] == 0.3  # a worse policy did not replace it


def test_fresh_nav_metrics_saves_its_first_evaluation(tmp_path, monkeypatch, resumed_model):
    resumed_model.num_timesteps = 0
    final = {"status": "success", "nav_metric": 0.2, "time": 1.0}
    monkeypatch.setattr(nav_metrics, "run_episodes", lambda *a, **k: [final])
    cb = NavMetricsCallback(eval_env=object(), eval_freq=100, best_path=tmp_path / "best")  # type: ignore[arg-type]
    _drive(cb, resumed_model, 100)
    assert cb.best_nav_metric == 0.2
    assert json.loads((tmp_path / "best" / STATE_JSON).read_text())["test_nav_metric"] == 0.2


def test_resumed_checkpoint_callback_waits_for_its_next_multiple(tmp_path, monkeypatch, resumed_model):
    saved = []
    cb = SafeCheckpointCallback(tmp_path, save_freq=300)
    monkeypatch.setattr(cb, "save", lambda name, **state: saved.append(resumed_model.num_timesteps))
    _drive(cb, resumed_model, 1)
    cb.on_rollout_end()
    assert saved == []  # 1,001 steps: the next checkpoint is due at 1,200
    _drive(cb, resumed_model, 200)
    cb.on_rollout_end()
    assert saved == [1201]
