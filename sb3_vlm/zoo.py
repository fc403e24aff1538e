"""rl-zoo3 hyper-parameter files -> arguments of our CLI (the same files the stock ``rl_zoo3.train`` reads)."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.noise import NormalActionNoise
from torch import nn

from sb3_vlm._validation import check_int
from sb3_vlm.formats.yaml_file import read_yaml

ZOO_PACKAGE = "zoo_configs"
"""The package holding the zoo files (installed with sb3-vlm as package data)."""
OBSERVATIONS = {"BarnNav-v0": "laser", "BarnNavCostmap-v0": "costmap"}
"""Observation kind of each registered BarnNav id."""
DEFAULT_CONF_NAMES = {"vlm": "td3_vlm_barnnav.yml", "applr": "td3_applr_barnnav.yml"}


def default_conf(policy: str) -> Path:
    """Path of the installed default zoo file of ``policy`` (``"vlm"`` or ``"applr"``).

    :raises ValueError: for another policy name.
    """
    if policy not in DEFAULT_CONF_NAMES:
        raise ValueError(f"default zoo files exist for {sorted(DEFAULT_CONF_NAMES)}, got {policy!r}")
    # Wheels install packages as directories, so the resource is a real file (rl_zoo3 needs a path).
    return Path(str(resources.files(ZOO_PACKAGE).joinpath(DEFAULT_CONF_NAMES[policy])))


@dataclass
class ZooConfig:
    """One env's entry of a zoo file, split the way rl_zoo3's ExperimentManager splits it.

    :param env_id: Gymnasium id (the file's top-level key).
    :param n_timesteps: Training budget (env steps over all envs).
    :param n_envs: Parallel environments.
    :param env_kwargs: Keyword arguments of the env.
    :param noise_std: Gaussian exploration noise (in [-1, 1] action units), or None.
    :param callback_specs: The file's ``callback`` entry as rl-zoo3 reads it: ``"module.Class"`` or a list of those
        and of ``{"module.Class": kwargs}`` (see :meth:`callbacks`).
    :param reward_normalization: ``reward_normalization: N`` (ours): APPLR's normalisation by the mean and std of
        the first N rewards (:mod:`sb3_vlm.td3.reward_norm`), or None.
    :param algo_kwargs: Everything else: the algorithm's constructor arguments (``policy`` resolved to a class or
        alias, ``policy_kwargs`` evaluated).
    """

    env_id: str
    n_timesteps: int
    n_envs: int = 1
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    noise_std: float | None = None
    callback_specs: list[Any] = field(default_factory=list)
    algo_kwargs: dict[str, Any] = field(default_factory=dict)
    reward_normalization: int | None = None

    def callbacks(self) -> list[BaseCallback]:
        """Fresh instances of the file's callbacks (e.g. the exploration-noise schedule), in file order."""
        made = []
        for spec in self.callback_specs:
            name, kwargs = (spec, {}) if isinstance(spec, str) else next(iter(spec.items()))
            made.append(_import(name, "callback")(**(kwargs or {})))
        return made

    def action_noise(self, n_actions: int) -> NormalActionNoise | None:
        """SB3 action noise of this config for ``n_actions`` dimensions."""
        if self.noise_std is None:
            return None
        return NormalActionNoise(np.zeros(n_actions), self.noise_std * np.ones(n_actions))


def _import(name: str, what: str) -> Any:
    """The object ``module.attr`` named in a zoo file (its ``policy`` or a ``callback``)."""
    module, _, attr = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise ValueError(f"zoo config: {what} {name!r} cannot be imported: {e}") from e


def _policy(name: str) -> Any:
    return name if "." not in name else _import(name, "policy")


def _callback_specs(path: Path, spec: Any) -> list[Any]:
    """rl-zoo3's ``callback`` entry as a list of ``"module.Class"`` / ``{"module.Class": kwargs}`` items."""
    specs = [] if spec is None else [spec] if isinstance(spec, str | dict) else list(spec)
    for item in specs:
        if not (isinstance(item, str) or (isinstance(item, dict) and len(item) == 1)):
            raise ValueError(f"{path}: callback entries are 'module.Class' or {{'module.Class': kwargs}}, got {item!r}")
    return specs


def _kwargs(value: Any) -> dict[str, Any]:
    """A ``policy_kwargs``/``env_kwargs`` value as a dict: a zoo string such as ``"dict(net_arch=[64])"`` is
    evaluated, as the zoo does, with ``nn``, ``th`` and ``np`` in scope."""
    if value is None:
        return {}
    if isinstance(value, str):
        value = eval(value, {"nn": nn, "th": th, "np": np, "dict": dict})
    if not isinstance(value, dict):
        raise ValueError(f"expected a dict or a 'dict(...)' string, got {value!r}")
    return dict(value)


def load_zoo_config(
    path: str | os.PathLike, env_id: str | None = None, hyperparams: dict[str, Any] | None = None
) -> ZooConfig:
    """Read ``env_id``'s entry (the only one if None) of an rl-zoo3 YAML file.

    :param hyperparams: Overrides of the entry's keys (rl-zoo3's ``--hyperparams``): a value replaces the file's,
        except ``policy_kwargs`` and ``env_kwargs``, which are merged key by key into the file's.
    :raises FileNotFoundError: if the file is missing. :raises ValueError: naming the file and the bad entry (or the
        line of a YAML syntax error).
    """
    path = Path(path)
    data = read_yaml(path, "zoo config")
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: expected a mapping of env ids to hyper-parameters, got {type(data).__name__}")
    if env_id is None:
        if len(data) != 1:
            raise ValueError(f"{path} has several env ids {sorted(data)}: choose one")
        env_id = next(iter(data))
    if env_id not in data:
        raise ValueError(f"{path} has no entry for {env_id!r}; it has {sorted(data)}")
    hp = dict(data[env_id])
    for key, value in (hyperparams or {}).items():
        hp[key] = {**_kwargs(hp.get(key)), **_kwargs(value)} if key in ("policy_kwargs", "env_kwargs") else value
    if "n_timesteps" not in hp:
        raise ValueError(f"{path}: {env_id} needs n_timesteps")
    if "policy_kwargs" in hp:
        hp["policy_kwargs"] = _kwargs(hp["policy_kwargs"])
    noise_type = hp.pop("noise_type", None)
    noise_std = hp.pop("noise_std", None)
    if noise_type is not None and noise_type.strip() != "normal":
        raise ValueError(f"{path}: only noise_type 'normal' is supported, got {noise_type!r}")
    callback_specs = _callback_specs(path, hp.pop("callback", None))
    reward_normalization = hp.pop("reward_normalization", None)
    if reward_normalization is not None:
        check_int(reward_normalization, "reward_normalization", 2, owner=str(path), note="the number of first rewards")
    hp["policy"] = _policy(hp.get("policy", "MlpPolicy"))
    if isinstance(hp.get("train_freq"), list):
        hp["train_freq"] = tuple(hp["train_freq"])
    return ZooConfig(
        env_id=env_id,
        n_timesteps=int(float(hp.pop("n_timesteps"))),
        n_envs=int(hp.pop("n_envs", 1)),
        env_kwargs=_kwargs(hp.pop("env_kwargs", None)),
        noise_std=None if noise_type is None else float(noise_std),
        callback_specs=callback_specs,
        algo_kwargs=hp,
        reward_normalization=reward_normalization,
    )
