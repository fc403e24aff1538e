"""The published APPLR actor (ros_jackal ``policy_actor``) as an SB3 ``TD3`` model: a drop-in baseline.

APPLR's actor is ``Linear(721 -> 512), ReLU, Linear(512 -> 512), ReLU, Linear(512 -> 7), tanh``: exactly the ``mu``
of SB3's TD3 actor with ``net_arch=[512, 512]``, and both map tanh outputs to physical parameters with the same
affine map over the parameter ranges. So the published weights load into a real ``TD3`` (actor and target) that
can be evaluated or fine-tuned with SB3 like any other.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch as th
from stable_baselines3 import TD3
from stable_baselines3.common.type_aliases import GymEnv

from sb3_vlm.formats.safe_pickle import load_applr_actor_state_dict

__all__ = ["APPLR_ACTOR_FILE", "APPLR_NET_ARCH", "applr_td3", "applr_mu_state"]

APPLR_ACTOR_FILE = "policy_actor"
APPLR_NET_ARCH = [512, 512]
# ros_jackal key -> index in SB3's ``actor.mu`` Sequential (Linear, ReLU, Linear, ReLU, Linear, Tanh).
_KEY_MAP = {"head.mlp.0": "0", "head.mlp.2": "2", "fc": "4"}


def applr_mu_state(path: str | os.PathLike) -> dict[str, th.Tensor]:
    """APPLR actor weights as a state dict of SB3's ``actor.mu``, read safely (no code runs).

    :param path: The ``policy_actor`` file or the directory holding it.
    :raises FileNotFoundError: if there is no such file. :raises ValueError: if its keys are not APPLR's.
    """
    path = Path(path)
    file = path / APPLR_ACTOR_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"APPLR actor {file} not found")
    state = load_applr_actor_state_dict(file)
    expected = {f"{k}.{p}" for k in _KEY_MAP for p in ("weight", "bias")}
    if set(state) != expected:
        raise ValueError(f"{file}: expected APPLR actor keys {sorted(expected)}, got {sorted(state)}")
    return {f"{_KEY_MAP[k.rsplit('.', 1)[0]]}.{k.rsplit('.', 1)[1]}": v for k, v in state.items()}


def applr_td3(path: str | os.PathLike, env: GymEnv, **kwargs: Any) -> TD3:
    """An SB3 ``TD3`` whose actor and actor target are the published APPLR actor.

    :param path: The ``policy_actor`` file or its directory.
    :param env: An env with APPLR's spaces (721-d laser observation, 7 DWA parameters).
    :param kwargs: Other ``TD3`` arguments (the critic starts fresh: APPLR did not publish it).
    :raises ValueError: if the env's spaces do not fit the actor (naming both shapes).
    """
    mu_state = applr_mu_state(path)
    model = TD3("MlpPolicy", env, policy_kwargs=dict(net_arch=APPLR_NET_ARCH), **kwargs)
    obs_dim, act_dim = mu_state["0.weight"].shape[1], mu_state["4.weight"].shape[0]
    if model.observation_space.shape != (obs_dim,) or model.action_space.shape != (act_dim,):
        raise ValueError(
            f"APPLR actor expects observations ({obs_dim},) and actions ({act_dim},), got env spaces "
            f"{model.observation_space.shape} and {model.action_space.shape}"
        )
    model.actor.mu.load_state_dict(mu_state)
    model.actor_target.mu.load_state_dict(mu_state)
    return model
