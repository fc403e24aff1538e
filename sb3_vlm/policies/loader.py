"""``load_policy(spec)``: which kind of policy is at a path, decided here and nowhere else."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from sb3_vlm._constants import ACTOR_HEAD_DIR, HEAD_DIR, RUN_CONFIG
from sb3_vlm.formats.applr import APPLR_ACTOR_FILE
from sb3_vlm.formats.sb3_zip import load_algorithm
from sb3_vlm.policies.base import FixedParams, LoadedPolicy, ParamTableLike, SB3Policy
from sb3_vlm.policies.directory import DirectoryOptions, load_directory

__all__ = ["APPLR_ENV", "applr_policy", "load_policy"]

APPLR_ENV = {"time_step": 1.0, "max_steps": 100}
"""APPLR chose parameters once per second for at most 100 steps (same 100 s budget as BARN)."""


def load_policy(
    spec: str | os.PathLike,
    params: ParamTableLike | None = None,
    image_size: tuple[int, int] | None = None,
    device: str = "cpu",
    **options: Any,
) -> LoadedPolicy:
    """
    Load any policy format (see the module docstring) behind one ``predict``.

    :param spec: ``[name=]target``.
    :param params: The planner's parameter table (e.g. ``envs.planners.DWA_PARAMS``): needed by ``dwa`` specs and
        the APPLR actor (ranges), used for output names and actor ranges of directories.
    :param image_size: ``(height, width)`` of the costmap images a directory policy sees when it records none.
    :param device: Torch device of SB3 models.
    :param options: :class:`DirectoryOptions` fields for checkpoint directories (``mode``, ``base_model``, ...).
    :raises ValueError: for a spec that is none of the known kinds (naming it), or a missing ``params``.
    """
    text = os.fspath(spec)
    name, _, target = text.partition("=") if "=" in text.partition(":")[0] else ("", "", text)
    path = Path(target)
    if target == "dwa" or target.startswith("dwa:"):
        return _fixed_params(text, name or target, target.partition(":")[2], _need(params, text))
    if (path.is_dir() and (path / APPLR_ACTOR_FILE).is_file()) or path.name == APPLR_ACTOR_FILE:
        table = _need(params, text)
        policy = applr_policy(path, table.low, table.high, device=device)
        return SB3Policy(name or "applr", "applr", policy, "laser", table.names, APPLR_ENV)
    if path.is_file() and path.suffix == ".zip":
        return _sb3_zip(name or path.parent.name, path, params, device)
    if path.is_dir() and ((path / ACTOR_HEAD_DIR).is_dir() or (path / HEAD_DIR).is_dir()):
        opts = DirectoryOptions(**{"params": params, **options})
        loaded = load_directory(path, opts, name or path.name)
        if image_size is not None:
            loaded.env_kwargs.setdefault("image_size", tuple(image_size))
        return loaded
    if not path.exists() and ("/" in target or path.suffix):
        raise FileNotFoundError(f"policy {text!r}: {path} not found")
    raise ValueError(
        f"policy {text!r}: expected 'dwa', 'dwa:name=value,...', an APPLR directory (policy_actor), an SB3 .zip, "
        "or a policy/checkpoint directory (actor_head/ or regression_head/)"
    )


def _fixed_params(spec: str, name: str, values_text: str, table: ParamTableLike) -> FixedParams:
    """The planner's defaults with the ``name=value,...`` of ``values_text`` (``dwa:max_vel_x=1.5``) set."""
    values = np.asarray(table.default, dtype=np.float64).copy()
    for item in filter(None, values_text.split(",")):
        key, _, value = item.partition("=")
        if key.strip() not in table.names:
            raise ValueError(f"policy {spec!r}: unknown parameter {key.strip()!r}; the parameters are {table.names}")
        values[table.names.index(key.strip())] = float(value)
    if hasattr(table, "validate"):
        values = table.validate(values)
    return FixedParams(name, values, table.names)


def _need(params: ParamTableLike | None, spec: str) -> ParamTableLike:
    if params is None:
        raise ValueError(f"policy {spec!r} needs the planner's parameter table: pass params=envs.planners.DWA_PARAMS")
    return params


def _sb3_zip(name: str, path: Path, params: ParamTableLike | None, device: str) -> SB3Policy:
    """An SB3 zip; the env settings of the training run it belongs to (``run_config.json`` above it) if any."""
    from sb3_vlm.zoo import OBSERVATIONS, load_zoo_config

    model = load_algorithm(path, device=device)
    env_id, env_kwargs = None, {}
    for parent in path.resolve().parents[:4]:
        if (parent / RUN_CONFIG).is_file():
            saved = json.loads((parent / RUN_CONFIG).read_text())
            cfg = load_zoo_config(saved["conf_file"], saved.get("env"), saved.get("hyperparams"))
            env_id, env_kwargs = cfg.env_id, {k: v for k, v in cfg.env_kwargs.items() if k != "reward"}
            break
    space = model.observation_space
    if env_id is not None:
        observation = OBSERVATIONS[env_id]
    else:
        observation = "laser" if isinstance(space, spaces.Box) and len(space.shape) == 1 else "costmap"
    if observation == "costmap" and isinstance(space, spaces.Dict):
        env_kwargs.setdefault("velocity", True)
    n = int(model.action_space.shape[0])
    names = (
        tuple(params.names) if params is not None and len(params.names) == n else tuple(f"param_{i}" for i in range(n))
    )
    return SB3Policy(name, "sb3", model, observation, names, env_kwargs)


def applr_policy(path: str | os.PathLike, low: np.ndarray, high: np.ndarray, device: str = "cpu") -> Any:
    """The published APPLR actor as an SB3 ``TD3Policy`` (721-d laser -> the planner's parameters)."""
    from stable_baselines3.td3.policies import TD3Policy

    from sb3_vlm.formats.applr import APPLR_NET_ARCH, applr_mu_state

    mu_state = applr_mu_state(path)
    obs_dim, act_dim = mu_state["0.weight"].shape[1], mu_state["4.weight"].shape[0]
    if act_dim != len(low):
        raise ValueError(f"APPLR actor {path} has {act_dim} outputs, the parameter table {len(low)}")
    observation_space = spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
    action_space = spaces.Box(np.asarray(low, np.float32), np.asarray(high, np.float32))
    policy = TD3Policy(observation_space, action_space, lambda _: 0.0, net_arch=APPLR_NET_ARCH).to(device)
    policy.actor.mu.load_state_dict(mu_state)
    policy.set_training_mode(False)
    return policy
