"""Distributed collection on Ray (optional extra ``ray``: ``pip install 'sb3-vlm[ray]'``).

* :class:`RayVecEnv`: an SB3 ``VecEnv`` whose environments live in Ray actors, restarted when they die.
* :class:`ActorRestartCallback`: logs ``distributed/actor_restarts``.
* :class:`AsyncLearner`: collector actors run episodes with versioned policy weights; the learner trains.
* :class:`BufferDirectoryBridge`: the learner also reads trajectory files of ROS/Condor collectors and publishes
  policies for them (FTRL/APPLR file protocol).

Importing this package imports Ray; without it, the ``ImportError`` names the extra.
"""

try:
    import ray  # noqa: F401
except ImportError as e:
    raise ImportError("sb3_vlm.distributed needs Ray: pip install 'sb3-vlm[ray]'") from e

from sb3_vlm.distributed.callbacks import ActorRestartCallback
from sb3_vlm.distributed.learner import AsyncLearner
from sb3_vlm.distributed.vec_env import RayVecEnv
from sb3_vlm.workflows.bridge import BufferDirectoryBridge

__all__ = ["ActorRestartCallback", "AsyncLearner", "BufferDirectoryBridge", "RayVecEnv"]
