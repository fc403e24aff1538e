"""Prompts that steer a supervised VLM policy: their texts, the objective their labels are searched under, and
where they are valid.

A prompt file (YAML or JSON) is a list of entries::

    - text: "Keep clear of obstacles."
      reward: {collision: -10.0, progress: 5.0}   # RewardConfig fields for the label search (default: FTRL's)
      planners: [DWA]                              # planners that support the prompt (default: all)
      min_clearance: 0.0                           # valid only when the nearest laser return is this far (m)

``sb3-vlm pretrain --prompts FILE`` searches labels for every prompt under its own ``reward`` and trains one
checkpoint on all of them, the prompt text going through the VLM's input; the prompt-selection env
(:mod:`sb3_vlm.rewards.prompt_env`) masks prompts by ``planners`` and ``min_clearance``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from envs.nav_env import RewardConfig

__all__ = ["DEFAULT_PROMPTS", "PromptSpec", "load_prompts", "prompt_mask", "save_prompts"]


@dataclass(frozen=True)
class PromptSpec:
    """
    One prompt of a prompt-conditioned policy.

    :param text: The instruction given to the VLM.
    :param reward: :class:`envs.nav_env.RewardConfig` fields that differ from FTRL's reward: the objective under
        which this prompt's labels are searched.
    :param planners: Names of the local planners that support the prompt, or None for every planner.
    :param min_clearance: The prompt is valid only while the nearest laser return is at least this far (m).
    """

    text: str
    reward: Mapping[str, Any] = field(default_factory=dict)
    planners: tuple[str, ...] | None = None
    min_clearance: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or not self.text.strip():
            raise ValueError(f"PromptSpec: 'text' must be a non-empty string, got {self.text!r}")
        if not isinstance(self.reward, Mapping):
            raise TypeError(f"PromptSpec {self.text!r}: 'reward' must be a mapping, got {type(self.reward).__name__}")
        known = {f.name for f in fields(RewardConfig)}
        unknown = sorted(set(self.reward) - known)
        if unknown:
            raise ValueError(
                f"PromptSpec {self.text!r}: unknown reward fields {unknown}, expected some of {sorted(known)}"
            )
        self.reward_config()  # validates the values
        if self.planners is not None:
            object.__setattr__(self, "planners", tuple(str(p).upper() for p in self.planners))
        if not np.isfinite(self.min_clearance) or self.min_clearance < 0:
            raise ValueError(f"PromptSpec {self.text!r}: 'min_clearance' must be >= 0 (m), got {self.min_clearance}")

    def reward_config(self) -> RewardConfig:
        """The label-search objective: FTRL's reward with this prompt's fields."""
        return RewardConfig(**self.reward)

    def supports(self, planner: str) -> bool:
        """Whether ``planner`` supports the prompt."""
        return self.planners is None or planner.upper() in self.planners


DEFAULT_PROMPTS: tuple[PromptSpec, ...] = (
    PromptSpec("Drive to the goal at a balanced pace."),
    # Progress pays twice FTRL's; being near obstacles costs a quarter: labels favour speed. Not valid close to them.
    PromptSpec("Move fast toward the goal.", reward=dict(progress=20.0, collision=-0.25), min_clearance=0.3),
    # Proximity costs ten times FTRL's: labels favour clearance over progress.
    PromptSpec("Keep clear of obstacles.", reward=dict(progress=5.0, collision=-10.0)),
)
"""Three prompts whose objectives differ by progress vs clearance (FTRL's reward terms)."""


def load_prompts(path: str | os.PathLike) -> list[PromptSpec]:
    """
    Read a prompt file (see the module docstring).

    :raises ValueError: naming the file and the entry when the content is not a non-empty list of valid entries.
    """
    path = Path(path)
    try:
        entries = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML/JSON: {e}") from e
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: expected a non-empty list of prompts, got {type(entries).__name__}")
    specs = []
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            entry = {"text": entry}
        if not isinstance(entry, Mapping):
            raise ValueError(f"{path}: entry {i} must be a text or a mapping, got {type(entry).__name__}")
        allowed = {f.name for f in fields(PromptSpec)}
        if set(entry) - allowed:
            raise ValueError(f"{path}: entry {i} has unknown keys {sorted(set(entry) - allowed)}, expected {allowed}")
        try:
            specs.append(PromptSpec(**entry))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: entry {i}: {e}") from e
    texts = [s.text for s in specs]
    if len(set(texts)) != len(texts):
        raise ValueError(f"{path}: prompt texts must be distinct, got {texts}")
    return specs


def save_prompts(specs: Sequence[PromptSpec], path: str | os.PathLike) -> Path:
    """Write ``specs`` as a prompt file that :func:`load_prompts` reads back."""
    path = Path(path)
    entries = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(s).items()} for s in specs]
    path.write_text(yaml.safe_dump(entries, sort_keys=False))
    return path


def prompt_mask(specs: Sequence[PromptSpec], planner: str, clearance: float) -> np.ndarray:
    """
    Which prompts are valid: supported by ``planner`` and ``clearance`` (m, the nearest laser return) at least their
    ``min_clearance``.

    :return: ``[K]`` bool.
    """
    return np.array([s.supports(planner) and clearance >= s.min_clearance for s in specs], dtype=bool)
