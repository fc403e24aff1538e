"""Prompts that steer a supervised VLM policy: their texts, the objective their labels are searched under, and where
they are valid; the prompt file (YAML or JSON) and how ``sb3-vlm pretrain --prompts`` and the prompt-selection env
use it: docs/guide/prompt_selection.md "1. A prompt-conditioned supervised policy"."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch as th
import yaml

from envs.rewards import RewardConfig
from sb3_vlm._validation import settings_from
from sb3_vlm.sft.data import SFTDataset

if TYPE_CHECKING:
    from sb3_vlm.sft.labels import LabelSettings

__all__ = [
    "DEFAULT_PROMPTS",
    "PROMPTS_FILE",
    "PromptSpec",
    "generate_prompt_pairs",
    "load_prompts",
    "prompt_mask",
    "prompt_parameters",
    "report_prompts",
    "save_prompts",
]

PROMPTS_FILE = "prompts.yaml"
"""The prompt file a prompt-conditioned checkpoint carries (written by ``sb3-vlm pretrain --prompts``)."""


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
    # Progress pays twice FTRL's and a collision costs a tenth: labels take risks for speed. Not valid near obstacles.
    PromptSpec(
        "Move fast toward the goal.", reward=dict(progress=20.0, failure=-10.0, collision=0.0), min_clearance=0.3
    ),
    # Progress pays a fifth of FTRL's and a collision three times: labels give up progress for safety.
    PromptSpec("Keep clear of obstacles.", reward=dict(progress=2.0, failure=-300.0)),
)
"""Three prompts whose objectives trade progress against collision risk (FTRL's reward terms)."""


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
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of prompts, got {type(entries).__name__}")
    if not entries:
        raise ValueError(f"{path}: the list of prompts is empty")
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


def generate_prompt_pairs(
    specs: Sequence[PromptSpec], settings: LabelSettings | int, *args: Any, **kwargs: Any
) -> tuple[SFTDataset, dict[str, Any]]:
    """
    Label pairs for every prompt under its own objective (:func:`sb3_vlm.sft.labels.generate_pairs` with the
    prompt's ``reward``). The same ``seed`` starts every prompt's episodes in the same worlds with the same noise;
    the episodes then follow that prompt's labels, so each prompt's images are the states its own behaviour visits.
    Episode ids are shared, so a validation split by episode holds a start out under every prompt.

    :param specs: The prompts.
    :param settings: The search of every prompt (:class:`~sb3_vlm.sft.labels.LabelSettings`: ``n_samples`` pairs
        per prompt, its ``reward`` replaced by the prompt's). The call form of sb3-vlm 0.1,
        ``generate_prompt_pairs(specs, samples_per_prompt, **kwargs)``, still works for one release and warns.
    :return: The pairs with their ``prompts`` column, and per-prompt statistics under ``"per_prompt"``.
    """
    from sb3_vlm.sft.labels import LabelSettings, generate_pairs  # the simulator, only when labels are made

    settings = settings_from(LabelSettings, settings, args, kwargs, "generate_prompt_pairs")
    if not specs:
        raise ValueError("generate_prompt_pairs: needs at least one prompt, got none")
    parts, per_prompt = [], {}
    for spec in specs:
        data, stats = generate_pairs(dataclasses.replace(settings, reward=spec.reward_config()))
        parts.append(data)
        per_prompt[spec.text] = stats
    merged = SFTDataset(
        images=np.concatenate([d.images for d in parts]),
        labels=np.concatenate([d.labels for d in parts]),
        groups=np.concatenate([d.groups for d in parts]),
        names=parts[0].names,
        prompts=np.concatenate([[s.text] * len(d) for s, d in zip(specs, parts, strict=True)]),
    )
    stats = {
        "pairs": len(merged),
        "episodes": int(len(np.unique(merged.groups))),
        "seconds": float(sum(s["seconds"] for s in per_prompt.values())),
        # The library is drawn from the seed: the same vectors for every prompt; choices and ties add up.
        "chosen": np.sum([s["chosen"] for s in per_prompt.values()], axis=0).tolist(),
        "skipped_ties": int(sum(s["skipped_ties"] for s in per_prompt.values())),
        "per_prompt": per_prompt,
    }
    return merged, stats


@th.no_grad()
def prompt_parameters(extractor: Any, images: np.ndarray, specs: Sequence[PromptSpec]) -> dict[str, list[float]]:
    """
    How a prompt-conditioned model's answers differ by prompt: the mean predicted parameters (physical units) over
    the same ``images`` ``[N, 3, H, W]`` uint8 under each prompt.

    :param extractor: A :class:`~sb3_vlm.model.extractor.VLMDPTExtractor` with an SFT head.
    :return: ``{prompt text: [P] mean parameters}``.
    """
    tensor = th.from_numpy(np.asarray(images))
    return {
        s.text: extractor.predict_parameters(tensor, prompts=[s.text] * len(tensor)).double().mean(0).tolist()
        for s in specs
    }


def report_prompts(
    extractor: Any, data: SFTDataset, prompts_file: str | os.PathLike | None, out: str | os.PathLike
) -> dict[str, dict[str, list[float]]]:
    """
    After prompt-conditioned SFT: write the checkpoint's ``prompts.yaml`` and print, per prompt, the mean label and
    the mean prediction (physical units) on the same images (those of the first prompt's pairs, at most 256).

    :param prompts_file: The prompt file trained on, or None (``--data`` with a prompts column: plain entries).
    :return: ``{"labels": {text: [P]}, "predicted": {text: [P]}}``.
    """
    texts = list(dict.fromkeys(data.prompts.tolist()))
    specs = load_prompts(prompts_file) if prompts_file is not None else [PromptSpec(t) for t in texts]
    save_prompts(specs, Path(out) / PROMPTS_FILE)
    labels = {t: data.labels[data.prompts == t].mean(0)[: extractor.dpt.num_params].tolist() for t in texts}
    images = data.images[data.prompts == texts[0]][:256]
    predicted = prompt_parameters(extractor, images, specs)
    names = data.names or tuple(f"param_{j}" for j in range(data.num_params))
    for text in texts:
        rows = zip(names, labels[text], predicted[text], strict=False)  # labels may carry velocity columns
        pairs = ", ".join(f"{n} {lab:.3g}/{pred:.3g}" for n, lab, pred in rows)
        print(f"prompt {text!r}: mean label/prediction {pairs}")
    return {"labels": labels, "predicted": predicted}
