"""FTRL's RL training YAML (``rlft/train.py``, docs/compat/ftrl.md §4.3) read as it is, deep-merged like FTRL's, and
mapped onto a zoo entry with a report of the keys applied and not applied (the mapping, key by key:
docs/guide/ftrl_workflow.md "FTRL's RL YAML, key by key")."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sb3_vlm.formats.yaml_file import read_yaml
from sb3_vlm.model.config import TINY
from sb3_vlm.zoo import ZooConfig

__all__ = ["FTRLConfigReport", "apply_ftrl_config", "deep_merge", "read_ftrl_config"]

_SCHEDULE = "sb3_vlm.callbacks.ExplorationNoiseScheduleCallback"
_OLD_SCHEDULE = "sb3_vlm.td3.exploration.ExplorationNoiseSchedule"  # deprecated path, still in users' zoo files
PLANNERS = ("DWA", "TEB", "MPPI", "DDP")


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` merged in, recursively for nested mappings; ``override``'s values win."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    data = read_yaml(path, "FTRL config")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping (training_config, env_config, ...), got {type(data).__name__}")
    return data


def read_ftrl_config(path: str | os.PathLike, base: str | os.PathLike | None = None) -> dict[str, Any]:
    """FTRL's YAML ``path`` deep-merged over ``base`` (FTRL: ``buffer/<policy>/config.yaml``), as ``rlft/train.py``.

    :raises FileNotFoundError: for a missing file. :raises ValueError: if a file is not a YAML mapping.
    """
    config = _read_yaml(Path(path))
    return config if base is None else deep_merge(_read_yaml(Path(base)), config)


@dataclass
class FTRLConfigReport:
    """What :func:`apply_ftrl_config` did.

    :param applied: ``(ftrl key, our setting)`` pairs, in file order.
    :param unsupported: ``(ftrl key, reason)`` pairs of keys that were not applied.
    :param seed: ``env_config.seed``, if given (the caller sets the run's seed).
    """

    applied: list[tuple[str, str]] = field(default_factory=list)
    unsupported: list[tuple[str, str]] = field(default_factory=list)
    seed: int | None = None

    def warning(self) -> str | None:
        """One message listing every unsupported key, or None if all were applied."""
        if not self.unsupported:
            return None
        keys = "; ".join(f"{key} ({reason})" for key, reason in self.unsupported)
        return f"FTRL config: {len(self.unsupported)} key(s) not applied: {keys}"


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"FTRL config: {key} must be a number, got {value!r}")
    try:
        return float(value)  # YAML reads 2e-5 (no dot) as a string
    except ValueError as e:
        raise ValueError(f"FTRL config: {key} must be a number, got {value!r}") from e


def _int(key: str, value: Any) -> int:
    number = _number(key, value)
    if number != int(number) or number < 0:
        raise ValueError(f"FTRL config: {key} must be a non-negative integer, got {value!r}")
    return int(number)


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"FTRL config: {key} must be true or false, got {value!r}")
    return value


def _planner(key: str, value: Any) -> str:
    prefix = str(value).split("_")[0].upper()
    if prefix not in PLANNERS:
        raise ValueError(f"FTRL config: {key} must start with one of {[p.lower() for p in PLANNERS]}, got {value!r}")
    return prefix


def _checkpoint(key: str, value: Any) -> str:
    """The supervised checkpoint (or model directory) FTRL's RL stage starts from: ``"tiny"`` or an existing
    directory, checked before anything is loaded (a wrong path would otherwise surface as a confusing model error)."""
    path = str(value)
    if path != TINY and not Path(path).is_dir():
        raise FileNotFoundError(
            f"FTRL config: {key} {path!r} is not a directory (relative paths start at {os.getcwd()}); "
            "point it at the supervised checkpoint (e.g. .../checkpoint-5000)"
        )
    return path


# FTRL key -> (where it goes, our name, converter). Where: algo kwarg, policy kwarg, env kwarg, or a special slot.
_Rule = tuple[str, str, Callable[[str, Any], Any]]
_RULES: dict[str, _Rule] = {
    "training_config.actor_lr": ("algo", "actor_lr", _number),
    "training_config.critic_lr": ("algo", "critic_lr", _number),
    "training_config.buffer_size": ("algo", "buffer_size", _int),
    "training_config.freeze_vlm_actor": ("policy", "freeze_vlm", _bool),
    "training_config.freeze_dpt_actor": ("policy", "freeze_dpt", _bool),
    "training_config.freeze_history_actor": (
        "policy",
        "freeze_history",
        lambda k, v: None if v is None else _bool(k, v),
    ),
    "training_config.freeze_dpt_critic": ("policy", "critic_dpt", lambda k, v: not _bool(k, v)),
    "training_config.vlm_checkpoint_path": ("policy", "backbone", _checkpoint),
    "training_config.use_4bit": ("policy", "quantization", lambda k, v: "nf4" if _bool(k, v) else None),
    "training_config.exploration_noise_start": ("noise_start", "noise_std", _number),
    "training_config.exploration_noise_end": ("noise_end", f"{_SCHEDULE}(end=)", _number),
    "training_config.pre_collect": ("algo", "learning_starts", _int),
    "training_config.policy_args.gamma": ("algo", "gamma", _number),
    "training_config.policy_args.tau": ("algo", "tau", _number),
    "training_config.policy_args.policy_noise": ("algo", "target_policy_noise", _number),
    "training_config.policy_args.noise_clip": ("algo", "target_noise_clip", _number),
    "training_config.policy_args.n_step": ("algo", "n_steps", _int),
    "training_config.policy_args.update_actor_freq": ("algo", "policy_delay", _int),
    "training_config.policy_args.exploration_noise": ("noise", "noise_std", _number),
    "training_config.training_args.max_step": ("n_timesteps", "n_timesteps", _int),
    "training_config.training_args.collect_per_step": ("train_freq", "train_freq", _int),
    "training_config.training_args.update_per_step": ("algo", "gradient_steps", _int),
    "training_config.training_args.batch_size": ("algo", "batch_size", _int),
    "training_config.training_args.pre_collect": ("algo", "learning_starts", _int),
    "env_config.env_id": ("env", "planner", _planner),
    "env_config.seed": ("seed", "seed", _int),
}
# Keys recognised but not applied, with the reason given in the warning.
_NOT_APPLIED = {
    "training_config.algorithm": "only TD3 is FTRL's algorithm here",
    "training_config.training_args.log_intervals": "SB3 logs every rollout; TensorBoard keys are FTRL's",
    "ftrl_config": "inference servers are started with `sb3-vlm serve`",
    "condor_config": "collectors are started with `sb3-vlm collect`",
}


MAX_KEYS = 10_000
"""More leaf keys than this is not a config (YAML aliases nesting mappings expand exponentially when walked)."""


def _flatten(
    data: Mapping[str, Any], prefix: str = "", items: list[tuple[str, Any]] | None = None
) -> list[tuple[str, Any]]:
    """``(dotted key, leaf value)`` pairs; a mapping under a rule-less key is walked into.

    :raises ValueError: past :data:`MAX_KEYS` keys.
    """
    items = [] if items is None else items
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and dotted not in _RULES and dotted not in _NOT_APPLIED and value:
            _flatten(value, f"{dotted}.", items)
        else:
            items.append((dotted, value))
        if len(items) > MAX_KEYS:
            raise ValueError(f"FTRL config: more than {MAX_KEYS} keys (under {prefix or 'the top level'}); aliases?")
    return items


def apply_ftrl_config(config: Mapping[str, Any], cfg: ZooConfig) -> FTRLConfigReport:
    """Set FTRL's keys (see the module docstring) on the zoo entry ``cfg``, in place.

    ``cfg.n_envs`` must already be final: ``collect_per_step`` transitions become ``train_freq`` env steps of
    ``n_envs`` transitions each.

    :param config: The (merged) FTRL YAML, as :func:`read_ftrl_config` returns it.
    :param cfg: A VLM policy's zoo entry.
    :return: Applied and unsupported keys, and ``env_config.seed``.
    :raises ValueError: naming the key, for a value of the wrong type.
    :raises FileNotFoundError: naming the key and the path, for a ``vlm_checkpoint_path`` that is not a directory.
    """
    report = FTRLConfigReport()
    policy_kwargs = dict(cfg.algo_kwargs.get("policy_kwargs") or {})
    items = _flatten(config)
    has_start = any(key == "training_config.exploration_noise_start" for key, _ in items)
    for key, value in items:
        if key in _NOT_APPLIED or key not in _RULES:
            report.unsupported.append((key, _NOT_APPLIED.get(key, "no sb3-vlm counterpart")))
            continue
        where, name, convert = _RULES[key]
        value = convert(key, value)
        if where == "algo":
            cfg.algo_kwargs[name] = value
        elif where == "policy":
            policy_kwargs[name] = value
        elif where == "env":
            cfg.env_kwargs[name] = value
            policy_kwargs["planner"] = value
        elif where == "n_timesteps":
            cfg.n_timesteps = value
        elif where == "train_freq":
            value = (max(1, round(value / cfg.n_envs)), "step")
            cfg.algo_kwargs[name] = value
        elif where == "noise_start" or (where == "noise" and not has_start):
            cfg.noise_std = value
        elif where == "noise":
            report.unsupported.append((key, "exploration_noise_start sets the initial noise"))
            continue
        elif where == "noise_end":
            _set_schedule_end(cfg, value)
        elif where == "seed":
            report.seed = value
        report.applied.append((key, f"{name}={value!r}"))
    cfg.algo_kwargs["policy_kwargs"] = policy_kwargs
    return report


def _set_schedule_end(cfg: ZooConfig, end: float) -> None:
    """Point the zoo entry's exploration-noise schedule at ``end`` (adding the schedule if it has none)."""
    for i, spec in enumerate(cfg.callback_specs):
        name, kwargs = (spec, {}) if isinstance(spec, str) else next(iter(spec.items()))
        if name in (_SCHEDULE, _OLD_SCHEDULE):
            cfg.callback_specs[i] = {name: {**(kwargs or {}), "end": end}}
            return
    cfg.callback_specs.append({_SCHEDULE: {"end": end}})
