"""Ray env actors restarted during training, in SB3's logger: :class:`ActorRestartCallback` (imports no Ray)."""

from __future__ import annotations

import sys

from stable_baselines3.common.callbacks import BaseCallback

__all__ = ["ActorRestartCallback"]


class ActorRestartCallback(BaseCallback):
    """
    Records ``distributed/actor_restarts`` (Ray env actors that died and were restarted since the env was built)
    every step, so each logger dump carries the current count. Does nothing when the training env is not a
    ``RayVecEnv`` (under any ``VecEnvWrapper``).

    :param verbose: 1: print a line when the count grows.
    """

    def __init__(self, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.seen = 0

    def _on_step(self) -> bool:
        # A RayVecEnv exists only once its module is imported: without it (or without Ray) there is nothing to count.
        ray_vec_env = sys.modules.get("sb3_vlm.distributed.vec_env")
        venv = self.training_env.unwrapped
        if ray_vec_env is not None and isinstance(venv, ray_vec_env.RayVecEnv):
            self.logger.record("distributed/actor_restarts", venv.actor_restarts)
            if self.verbose and venv.actor_restarts > self.seen:
                print(f"RayVecEnv: {venv.actor_restarts} actor restart(s) at step {self.num_timesteps}")
            self.seen = venv.actor_restarts
        return True
