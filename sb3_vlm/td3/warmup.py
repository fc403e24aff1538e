"""Deprecated: ``CriticWarmup`` is :class:`sb3_vlm.callbacks.CriticWarmupCallback`; the old name warns and forwards
for one release."""

from sb3_vlm._deprecation import module_getattr

__getattr__ = module_getattr(__name__, moved={"CriticWarmup": "sb3_vlm.callbacks.CriticWarmupCallback"})
