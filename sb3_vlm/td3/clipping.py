"""Deprecated: ``GradientClipping`` is :class:`sb3_vlm.callbacks.GradientClippingCallback`; the old names warn and
forward for one release."""

from sb3_vlm._deprecation import module_getattr

__getattr__ = module_getattr(
    __name__,
    moved={
        "GradientClipping": "sb3_vlm.callbacks.GradientClippingCallback",
        "clip_before_step": "sb3_vlm.callbacks.gradient_clipping.clip_before_step",
    },
)
