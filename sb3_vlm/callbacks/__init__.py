"""Every SB3 training callback of sb3-vlm, one module each; names end in ``Callback`` as in SB3.

``from sb3_vlm.callbacks import ExplorationNoiseScheduleCallback`` (or ``sb3_vlm.callbacks.<Name>`` in an rl-zoo3
``callback:`` list) imports only that callback's module (PEP 562): no Ray, no judge client, no simulator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sb3_vlm._deprecation import module_getattr

if TYPE_CHECKING:
    from sb3_vlm.callbacks.actor_restarts import ActorRestartCallback
    from sb3_vlm.callbacks.checkpoint import SafeCheckpointCallback
    from sb3_vlm.callbacks.critic_warmup import CriticWarmupCallback
    from sb3_vlm.callbacks.gradient_clipping import GradientClippingCallback
    from sb3_vlm.callbacks.judge_log import JudgeLogCallback
    from sb3_vlm.callbacks.nav_metrics import NavMetricsCallback
    from sb3_vlm.callbacks.noise_schedule import ExplorationNoiseScheduleCallback
    from sb3_vlm.callbacks.pre_tanh_penalty import PreTanhPenaltyCallback
    from sb3_vlm.callbacks.saturation import ActorSaturationMonitorCallback

# callback -> module of this package that defines it
_EXPORTS = {
    "ActorRestartCallback": "actor_restarts",
    "ActorSaturationMonitorCallback": "saturation",
    "CriticWarmupCallback": "critic_warmup",
    "ExplorationNoiseScheduleCallback": "noise_schedule",
    "GradientClippingCallback": "gradient_clipping",
    "JudgeLogCallback": "judge_log",
    "NavMetricsCallback": "nav_metrics",
    "PreTanhPenaltyCallback": "pre_tanh_penalty",
    "SafeCheckpointCallback": "checkpoint",
}
# Deprecated: helpers of the former ``sb3_vlm/callbacks.py`` module, now in the module of the callback using them.
_HELPERS = {
    "CHECKPOINT_BEST": "checkpoint",
    "CHECKPOINT_LAST": "checkpoint",
    "MODEL_ZIP": "checkpoint",
    "POLICY_DIR": "checkpoint",
    "REPLAY_BUFFER": "checkpoint",
    "STATE_JSON": "checkpoint",
    "find_checkpoint": "checkpoint",
    "save_policy_folder": "checkpoint",
    "save_training_checkpoint": "checkpoint",
    "BEST_INFO": "nav_metrics",
    "BEST_MODEL_DIR": "nav_metrics",
    "POLICY_STEP_PREFIX": "nav_metrics",
    "path_length": "nav_metrics",
    "run_episodes": "nav_metrics",
    "summarize": "nav_metrics",
}

__all__ = [
    "ActorRestartCallback",
    "ActorSaturationMonitorCallback",
    "CriticWarmupCallback",
    "ExplorationNoiseScheduleCallback",
    "GradientClippingCallback",
    "JudgeLogCallback",
    "NavMetricsCallback",
    "PreTanhPenaltyCallback",
    "SafeCheckpointCallback",
]

__getattr__ = module_getattr(
    __name__,
    lazy={name: f"{__name__}.{module}.{name}" for name, module in _EXPORTS.items()},
    moved={name: f"{__name__}.{module}.{name}" for name, module in _HELPERS.items()},
)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
