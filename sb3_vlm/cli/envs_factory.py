"""The simulator environments the CLI trains and evaluates on (the one place ``sb3_vlm`` meets ``envs``)."""

from __future__ import annotations

from typing import Any

from stable_baselines3.common.vec_env import VecMonitor

from envs import BarnNavSubprocVecEnv, BarnNavVecEnv
from sb3_vlm.zoo import OBSERVATIONS


def make_vec_env(
    env_id: str, n_envs: int, seed: int | None = None, n_workers: int = 1, **env_kwargs: Any
) -> VecMonitor:
    """``n_envs`` copies of ``env_id`` in one batched simulator (or split over ``n_workers`` processes), behind
    SB3's ``VecMonitor``.

    :param env_kwargs: BarnNav arguments (``barn_dir``, ``worlds``, ``reward``, ``image_size``, ``velocity``...).
    :raises ValueError: for an id that is not a BarnNav id.
    """
    if env_id not in OBSERVATIONS:
        raise ValueError(f"env id must be one of {sorted(OBSERVATIONS)}, got {env_id!r}")
    if n_workers > 1:
        venv = BarnNavSubprocVecEnv(n_envs, n_workers=n_workers, observation=OBSERVATIONS[env_id], **env_kwargs)
    else:
        venv = BarnNavVecEnv(n_envs, observation=OBSERVATIONS[env_id], **env_kwargs)
    venv.seed(seed)
    return VecMonitor(venv, info_keywords=("status", "nav_metric", "time", "world"))
