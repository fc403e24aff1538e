"""Deprecated: ``ActorRestartCallback`` lives in :mod:`sb3_vlm.callbacks`; the old path warns and forwards for one
release."""

from sb3_vlm._deprecation import module_getattr

__getattr__ = module_getattr(__name__, moved={"ActorRestartCallback": "sb3_vlm.callbacks.ActorRestartCallback"})
