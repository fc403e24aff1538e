"""Evaluate prompt choosers side by side: each fixed prompt, a random valid prompt per window, a trained agent.

Every chooser runs the same worlds with the same reset seeds (the simulator's noise follows the seed), so the
differences come from the prompts. Results are BARN metrics per episode with a mean and a 95 % t-interval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import stats

__all__ = ["Chooser", "compare_choosers", "fixed_prompt", "mean_ci", "model_chooser", "random_prompt", "run_episodes"]

Chooser = Callable[[np.ndarray, np.ndarray], int]
"""``(observation [256], action mask [K]) -> prompt index``."""


def fixed_prompt(k: int) -> Chooser:
    """Always prompt ``k`` (the first valid prompt where ``k`` is masked)."""
    return lambda obs, mask: k if mask[k] else int(np.flatnonzero(mask)[0])


def random_prompt(seed: int = 0) -> Chooser:
    """A uniformly random valid prompt per window."""
    rng = np.random.default_rng(seed)
    return lambda obs, mask: int(rng.choice(np.flatnonzero(mask)))


def model_chooser(model: Any, deterministic: bool = True) -> Chooser:
    """A ``MaskablePPO`` model's masked prediction."""

    def choose(obs: np.ndarray, mask: np.ndarray) -> int:
        action, _ = model.predict(obs, action_masks=mask, deterministic=deterministic)
        return int(action)

    return choose


def mean_ci(values: Sequence[float]) -> dict[str, float]:
    """Mean and 95 % Student-t interval ``{"mean", "low", "high", "n"}`` (the interval is the mean itself for n=1)."""
    x = np.asarray(values, dtype=np.float64)
    mean = float(x.mean())
    half = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else 0.0
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": len(x)}


def run_episodes(env: Any, choose: Chooser, worlds: Sequence[int], seed: int = 0) -> list[dict[str, Any]]:
    """
    One episode per world of a :class:`~sb3_vlm.rewards.prompt_env.PromptSelection` env.

    :param worlds: World ids (of the env's world set); episode ``i`` resets with ``seed + i``.
    :return: Per episode: ``world_id``, ``nav_metric``, ``success``, ``true_return``, ``prompt_counts`` ``[K]``.
    """
    results = []
    for i, world in enumerate(worlds):
        obs, _ = env.reset(seed=seed + i, options={"world_id": int(world)})
        counts = np.zeros(env.action_space.n, dtype=np.int64)
        done, total = False, 0.0
        while not done:
            action = choose(obs, env.action_masks())
            obs, _, terminated, truncated, info = env.step(action)
            counts[info["prompt"]] += 1
            total += info["true_reward"]
            done = terminated or truncated
        results.append(
            {
                "world_id": int(world),
                "nav_metric": float(info["nav_metric"]),
                "success": bool(info["success"]),
                "true_return": total,
                "prompt_counts": counts.tolist(),
            }
        )
    return results


def compare_choosers(
    env: Any, choosers: dict[str, Chooser], worlds: Sequence[int], seed: int = 0
) -> dict[str, dict[str, Any]]:
    """
    Run every chooser on the same worlds and seeds.

    :return: Per chooser name: ``nav_metric`` and ``success`` (:func:`mean_ci`), the share of windows each prompt got
        (``prompt_share`` ``[K]``) and the ``episodes``.
    """
    out = {}
    for name, choose in choosers.items():
        episodes = run_episodes(env, choose, worlds, seed)
        counts = np.sum([e["prompt_counts"] for e in episodes], axis=0)
        out[name] = {
            "nav_metric": mean_ci([e["nav_metric"] for e in episodes]),
            "success": mean_ci([float(e["success"]) for e in episodes]),
            "prompt_share": (counts / max(1, counts.sum())).round(3).tolist(),
            "episodes": episodes,
        }
    return out
