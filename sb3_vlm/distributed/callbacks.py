"""SB3 callbacks for :class:`sb3_vlm.distributed.RayVecEnv`."""

from __future__ import annotations

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
        from sb3_vlm.distributed.vec_env import RayVecEnv

        venv = self.training_env.unwrapped
        if isinstance(venv, RayVecEnv):
            self.logger.record("distributed/actor_restarts", venv.actor_restarts)
            if self.verbose and venv.actor_restarts > self.seen:
                print(f"RayVecEnv: {venv.actor_restarts} actor restart(s) at step {self.num_timesteps}")
            self.seen = venv.actor_restarts
        return True
