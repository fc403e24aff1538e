"""Names that moved keep working for one release: the old path gives the new object and a ``DeprecationWarning``
naming the new path; the new names warn about nothing; zoo files with the old paths still build their callbacks."""

from __future__ import annotations

import importlib
import re
import warnings

import pytest

from sb3_vlm import callbacks
from sb3_vlm.formats.ftrl_config import apply_ftrl_config
from sb3_vlm.zoo import load_zoo_config

# old module -> {old name: new path}
MOVED = {
    "sb3_vlm.td3.exploration": {
        "ExplorationNoiseSchedule": "sb3_vlm.callbacks.ExplorationNoiseScheduleCallback",
        "ActorSaturationMonitor": "sb3_vlm.callbacks.ActorSaturationMonitorCallback",
        "noise_std": "sb3_vlm.td3.noise.noise_std",
    },
    "sb3_vlm.td3.warmup": {"CriticWarmup": "sb3_vlm.callbacks.CriticWarmupCallback"},
    "sb3_vlm.td3.clipping": {
        "GradientClipping": "sb3_vlm.callbacks.GradientClippingCallback",
        "clip_before_step": "sb3_vlm.callbacks.gradient_clipping.clip_before_step",
    },
    "sb3_vlm.td3.action_penalty": {"PreTanhPenaltyCallback": "sb3_vlm.callbacks.PreTanhPenaltyCallback"},
    "sb3_vlm.rewards": {"JudgeLogCallback": "sb3_vlm.callbacks.JudgeLogCallback"},
    "sb3_vlm.rewards.callbacks": {"JudgeLogCallback": "sb3_vlm.callbacks.JudgeLogCallback"},
    "sb3_vlm.callbacks": {
        "MODEL_ZIP": "sb3_vlm.callbacks.checkpoint.MODEL_ZIP",
        "save_training_checkpoint": "sb3_vlm.callbacks.checkpoint.save_training_checkpoint",
        "run_episodes": "sb3_vlm.callbacks.nav_metrics.run_episodes",
        "BEST_MODEL_DIR": "sb3_vlm.callbacks.nav_metrics.BEST_MODEL_DIR",
    },
}
RAY_MOVED = {
    "sb3_vlm.distributed": {"ActorRestartCallback": "sb3_vlm.callbacks.ActorRestartCallback"},
    "sb3_vlm.distributed.callbacks": {"ActorRestartCallback": "sb3_vlm.callbacks.ActorRestartCallback"},
}


def _cases(moved: dict[str, dict[str, str]]) -> list[tuple[str, str, str]]:
    return [(module, name, new) for module, names in moved.items() for name, new in names.items()]


def _new(path: str) -> object:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("module, name, new", _cases(MOVED))
def test_an_old_name_warns_and_is_the_new_object(module: str, name: str, new: str) -> None:
    old_module = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match=rf"^{re.escape(f'{module}.{name}')} is deprecated.*use {new}$"):
        assert getattr(old_module, name) is _new(new)


@pytest.mark.parametrize("module, name, new", _cases(RAY_MOVED))
def test_the_ray_callback_moved_too(module: str, name: str, new: str) -> None:
    pytest.importorskip("ray")
    test_an_old_name_warns_and_is_the_new_object(module, name, new)


def test_from_import_of_an_old_name_warns_at_the_importing_line() -> None:
    with pytest.warns(DeprecationWarning, match="CriticWarmupCallback") as record:
        from sb3_vlm.td3.warmup import CriticWarmup  # noqa: F401
    assert record[0].filename == __file__


def test_the_new_names_warn_about_nothing() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in callbacks.__all__:
            assert getattr(callbacks, name).__name__ == name and name.endswith("Callback")


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="NoSuchCallback"):
        callbacks.NoSuchCallback  # noqa: B018
    with pytest.raises(AttributeError, match="nothing"):
        importlib.import_module("sb3_vlm.td3.exploration").nothing  # noqa: B018


OLD_ZOO_FILE = """\
BarnNav-v0:
  n_timesteps: 100
  policy: 'MlpPolicy'
  noise_type: 'normal'
  noise_std: 0.2
  callback:
    - sb3_vlm.td3.exploration.ExplorationNoiseSchedule:
        end: 0.05
    - sb3_vlm.td3.clipping.GradientClipping:
        max_norm: 0.5
    - sb3_vlm.td3.warmup.CriticWarmup:
        fraction: 0.5
    - sb3_vlm.td3.action_penalty.PreTanhPenaltyCallback:
        coef: 1.0
    - sb3_vlm.td3.exploration.ActorSaturationMonitor
"""


def test_a_zoo_file_with_the_old_paths_builds_the_new_callbacks(tmp_path) -> None:
    path = tmp_path / "old.yml"
    path.write_text(OLD_ZOO_FILE)
    cfg = load_zoo_config(path)
    with pytest.warns(DeprecationWarning) as record:
        made = cfg.callbacks()
    assert [type(c).__name__ for c in made] == [
        "ExplorationNoiseScheduleCallback",
        "GradientClippingCallback",
        "CriticWarmupCallback",
        "PreTanhPenaltyCallback",
        "ActorSaturationMonitorCallback",
    ]
    assert len({str(w.message) for w in record}) == 5
    # FTRL's exploration_noise_end sets the old-path schedule's end instead of adding a second schedule.
    apply_ftrl_config({"training_config": {"exploration_noise_end": 0.01}}, cfg)
    schedules = [s for s in cfg.callback_specs if isinstance(s, dict) and "Schedule" in next(iter(s))]
    assert schedules == [{"sb3_vlm.td3.exploration.ExplorationNoiseSchedule": {"end": 0.01}}]
