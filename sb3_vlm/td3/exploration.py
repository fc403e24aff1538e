"""Deprecated: the exploration callbacks moved to :mod:`sb3_vlm.callbacks`, ``noise_std`` to
:mod:`sb3_vlm.td3.noise`. The old names warn and forward for one release."""

from sb3_vlm._deprecation import module_getattr

__getattr__ = module_getattr(
    __name__,
    moved={
        "ExplorationNoiseSchedule": "sb3_vlm.callbacks.ExplorationNoiseScheduleCallback",
        "ActorSaturationMonitor": "sb3_vlm.callbacks.ActorSaturationMonitorCallback",
        "noise_std": "sb3_vlm.td3.noise.noise_std",
    },
)
