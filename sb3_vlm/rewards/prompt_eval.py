"""Train a prompt chooser (MaskablePPO) and evaluate choosers side by side: each fixed prompt, a random valid prompt
per window, a trained agent.

Every chooser runs the same worlds with the same reset seeds (the simulator's noise follows the seed), so the
differences come from the prompts. Results are BARN metrics per episode with a mean and a 95 % t-interval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

__all__ = [
    "ENV_ID",
    "MODES",
    "Chooser",
    "compare_choosers",
    "compare_with_baselines",
    "fixed_prompt",
    "mean_ci",
    "model_chooser",
    "random_prompt",
    "run_episodes",
    "default_conf",
    "train_selector",
]

ENV_ID = "BarnNavPromptSelection-v0"
MODES = {"quick": dict(worlds=20, steps=2_000, n_envs=2), "full": dict(worlds=100, steps=10_000, n_envs=4)}
"""The seed system's modes: 20 / 100 "images" (here: the first training worlds), 2,000 / 10,000 steps, 2 / 4 envs."""

Chooser = Callable[[np.ndarray, np.ndarray], int]
"""``(observation [256], action mask [K]) -> prompt index``."""


def default_conf() -> Path:
    """The installed rl-zoo3 file of MaskablePPO prompt selection (``zoo_configs/ppo_mask_prompt_selection.yml``)."""
    return Path(str(resources.files("zoo_configs").joinpath("ppo_mask_prompt_selection.yml")))


def train_selector(
    env_kwargs: dict[str, Any], algo_kwargs: dict[str, Any], steps: int, n_envs: int, seed: int = 0, **learn_kwargs: Any
) -> Any:
    """
    Train ``MaskablePPO`` on ``n_envs`` prompt-selection envs (``BarnNavPromptSelection-v0(**env_kwargs)``, each
    behind SB3's ``Monitor``) for ``steps`` windows.

    :param algo_kwargs: ``MaskablePPO`` arguments (a zoo file's ``algo_kwargs``: ``policy``, ``learning_rate``...).
    :param learn_kwargs: ``learn`` arguments (``progress_bar``, ``callback``).
    :return: The trained model.
    """
    from sb3_contrib import MaskablePPO
    from stable_baselines3.common.env_util import make_vec_env

    from sb3_vlm.rewards.prompt_env import make_prompt_selection_env

    vec_env = make_vec_env(make_prompt_selection_env, n_envs=n_envs, seed=seed, env_kwargs=env_kwargs)
    model = MaskablePPO(env=vec_env, seed=seed, verbose=0, **algo_kwargs)
    return model.learn(steps, **learn_kwargs)


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


def compare_with_baselines(
    env: Any, agents: dict[str, Any], worlds: Sequence[int], seed: int = 0
) -> dict[str, dict[str, Any]]:
    """
    Every fixed prompt (``"fixed:<text>"``), a random valid prompt per window (``"random"``, seeded) and each agent's
    deterministic choice (named as in ``agents``: trained MaskablePPO models), on the same worlds with reset seeds
    from ``10_000 + seed`` (:func:`compare_choosers`).
    """
    choosers = {f"fixed:{p.text}": fixed_prompt(k) for k, p in enumerate(env.policy.prompts)}
    choosers["random"] = random_prompt(seed)
    choosers.update({name: model_chooser(model) for name, model in agents.items()})
    return compare_choosers(env, choosers, worlds, seed=10_000 + seed)
