"""Callback costs: NavMetricsCallback summarises its episode window once per ended episode, not every step."""

import numpy as np
from _laser_env import laser_env
from stable_baselines3 import TD3
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_vlm.callbacks import NavMetricsCallback, nav_metrics


def test_window_is_summarised_per_ended_episode_and_logged_every_step(monkeypatch):
    model = TD3("MlpPolicy", DummyVecEnv([laser_env]), policy_kwargs=dict(net_arch=[8]))
    model.set_logger(configure(None, []))
    summaries = []
    summarize = nav_metrics.summarize
    monkeypatch.setattr(nav_metrics, "summarize", lambda finals: summaries.append(len(finals)) or summarize(finals))
    cb = NavMetricsCallback()
    cb.init_callback(model)
    cb.on_training_start({}, {})
    final = {"status": "success", "nav_metric": 0.5, "time": 10.0, "episode": {"r": 1.0, "l": 20}}
    for step in range(10):
        ended = step in (2, 7)
        cb.update_locals({"infos": [final if ended else {}], "dones": np.array([ended])})
        cb.on_step()
        if step == 5:
            model.logger.dump()  # SB3 clears recorded values at each dump; the next step records them again
    assert summaries == [1, 2]
    values = model.logger.name_to_value
    assert values["train/Success_rate"] == 1.0 and values["train/n_episode"] == 2
    assert values["train/Episode_length"] == 20 and values["train/Status_counts/success"] == 2
