"""Distributed collection on Ray (optional extra ``ray``: ``pip install 'sb3-vlm[ray]'``): :class:`RayVecEnv`,
:class:`AsyncLearner` and :class:`BufferDirectoryBridge` for collectors outside Ray; their callback is
:class:`~sb3_vlm.callbacks.ActorRestartCallback`. Importing this package imports Ray; without it, the ``ImportError``
names the extra."""

try:
    import ray  # noqa: F401
except ImportError as e:
    raise ImportError("sb3_vlm.distributed needs Ray: pip install 'sb3-vlm[ray]'") from e

from sb3_vlm._deprecation import module_getattr
from sb3_vlm.distributed.learner import AsyncLearner
from sb3_vlm.distributed.vec_env import RayVecEnv
from sb3_vlm.workflows.bridge import BufferDirectoryBridge

__all__ = ["AsyncLearner", "BufferDirectoryBridge", "RayVecEnv"]

__getattr__ = module_getattr(__name__, moved={"ActorRestartCallback": "sb3_vlm.callbacks.ActorRestartCallback"})
