"""SFT labels by receding-horizon search in the embedded simulator (``sb3-vlm pretrain``, step 1): every window, copies
of each episode try a library of DWA vectors and the best labels the states of its branch, which the episode then
follows (docs/guide/supervised.md "How the search works")."""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from envs import NavBatch
from envs.nav_env import VELOCITY_HIGH, VELOCITY_LOW, RewardConfig
from envs.planners import DWA_PARAMS
from envs.render import DEFAULT_IMAGE_SIZE
from sb3_vlm._constants import VELOCITY_OUTPUTS
from sb3_vlm.sft.data import SFTDataset

__all__ = ["clone_slot", "generate_pairs"]

TIE_TOLERANCE = 0.05
"""Horizon returns within this of the best (reward units: 5 mm of progress) count as ties; ties go to the vector
nearest the defaults, and states where every candidate ties (the choice does not matter) are skipped."""
GRID: dict[str, tuple[float, ...]] = {
    "max_vel_x": (0.5, 1.0, 1.5, 2.0),
    "max_vel_theta": (1.57, 3.14),
    "inflation_radius": (0.1, 0.3, 0.6),
}
"""The ``"grid"`` library: every combination of these values, the other parameters at their defaults (24 vectors, the
defaults among them). Labels then vary only where the scene can tell (speed, turning rate, clearance); a library
over all seven parameters labels the other four with noise (whichever random vector happened to win)."""
MAX_EPISODE_STEPS = 100
"""Episode length cap of the rollouts (FTRL drops trajectories longer than 100 steps from its SFT data)."""


def clone_slot(batch: NavBatch, src: int, dst: Sequence[int] | np.ndarray) -> None:
    """
    Copy episode ``src`` of ``batch`` (simulator, planner and env state) into slots ``dst``.

    Every per-robot field (an array whose first axis is the batch, or a list with one entry per robot) of the
    ``NavBatch``, its ``BatchSim`` and its local planner is copied; noise generators are deep-copied so that the
    copies replay ``src``'s noise. :func:`generate_pairs` verifies the copy on every use (a slot given the same
    parameters as ``src`` must follow it exactly).

    :param batch: The batched env.
    :param src: Source slot.
    :param dst: Destination slots (not containing ``src``).
    """
    dst = [int(d) for d in np.atleast_1d(dst)]
    if src in dst:
        raise ValueError(f"clone_slot: the destinations {dst} contain the source slot {src}")
    n = batch.n
    for owner in (batch, batch.sim, batch.sim.planner):
        for value in vars(owner).values():
            if isinstance(value, np.ndarray) and value.ndim > 0 and value.shape[0] == n:
                value[dst] = value[src]
            elif isinstance(value, list) and len(value) == n:
                for d in dst:
                    value[d] = _copy_entry(value[src])


def _copy_entry(value: Any) -> Any:
    if isinstance(value, np.random.Generator):
        return copy.deepcopy(value)
    if isinstance(value, list):
        return list(value)
    if isinstance(value, np.ndarray):
        return value.copy()
    return value  # shared read-only objects: worlds, their maps


def _latin_hypercube(rng: np.random.Generator, k: int, dims: int) -> np.ndarray:
    """``k`` points in ``[-1, 1]^dims``, one in each of ``k`` equal strata of every axis."""
    strata = np.stack([rng.permutation(k) for _ in range(dims)], axis=1)
    return (strata + rng.uniform(size=(k, dims))) / k * 2.0 - 1.0


def _library(kind: str, table: Any, default: np.ndarray, candidates: int, rng: np.random.Generator) -> np.ndarray:
    """The ``[K, P]`` candidate vectors of :func:`generate_pairs`, the defaults first."""
    if kind == "grid":
        vectors = [default.copy()]
        for values in itertools.product(*GRID.values()):
            vector = default.copy()
            vector[[table.index(name) for name in GRID]] = values
            if not np.allclose(vector, default):
                vectors.append(vector)
        return table.validate(np.stack(vectors))
    if kind == "lhs":
        unit = _latin_hypercube(rng, candidates, len(table))
        unit[0] = table.to_unit(default)
        vectors = table.validate(table.from_unit(unit))
        vectors[0] = default
        return vectors
    raise ValueError(f"generate_pairs: library must be 'grid' or 'lhs', got {kind!r}")


def generate_pairs(
    n_samples: int,
    *,
    barn_dir: str | Path | None = None,
    worlds: str | Sequence[int] | None = None,
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
    library: str = "lhs",
    candidates: int = 24,
    horizon: int = 12,
    n_envs: int = 8,
    velocity_labels: bool = True,
    temperature: float | None = None,
    noise_replicas: int = 3,
    seed: int = 0,
    progress_bar: bool = True,
    reward: str | RewardConfig = "ftrl",
) -> tuple[SFTDataset, dict[str, Any]]:
    """
    Build (scene image, good parameters) pairs by short-horizon parameter search (see the module docstring).

    :param n_samples: Pairs to return.
    :param barn_dir: Real BARN worlds, or None for generated ones.
    :param worlds: World set (``"train"``, ``"test"``, ``"all"``, ids, or None: the 250 training worlds, generated
        or of ``barn_dir``).
    :param image_size: ``(height, width)`` of the scene images.
    :param library: The ``K`` vectors tried from every state: ``"grid"`` (:data:`GRID`, ``K = 24``) or ``"lhs"``
        (the defaults + ``candidates - 1`` Latin-hypercube vectors over every parameter's range).
    :param candidates: ``K`` of the ``"lhs"`` library, >= 2.
    :param horizon: Steps (0.5 s each) every candidate drives: the window of one label, >= 1.
    :param n_envs: Episodes rolled out side by side (the simulator holds ``n_envs * (K + 1)`` robots).
    :param velocity_labels: Append the velocity after the state's step on the chosen branch (FTRL's 9 outputs).
    :param temperature: None: the label is the best vector; a float ``T`` (reward units; 10 = 1 m of progress): the
        softmax(return / T)-weighted mean of the library (soft labels: what an MSE head can fit when several
        vectors are about as good). The episode follows the best vector either way.
    :param noise_replicas: ``R``: each candidate drives the window ``R`` times, the first copy with the episode's own
        noise, the others with fresh sensor and actuation noise, and scores the mean return. With ``R = 1`` the
        search knows the episode's future noise (it picks the fast vector that happens not to crash); ``R > 1``
        prefers vectors that work whatever the noise, which an image policy (that cannot see the noise) can follow.
    :param seed: Seed of worlds, noise and candidates.
    :param progress_bar: Show a tqdm bar.
    :param reward: The objective candidates are scored by: a preset of ``envs.nav_env.REWARD_PRESETS`` or a
        :class:`~envs.nav_env.RewardConfig` (a prompt's objective, :mod:`sb3_vlm.sft.prompts`).
    :return: The pairs (images ``[N, 3, H, W]`` uint8, labels ``[N, P]`` physical, episode ids) and statistics
        (``library`` ``[K, 7]``, how often each vector was ``chosen``, ``skipped_ties``, the mean return gain of the
        chosen vector over the defaults, the simulated ``env_steps`` of every slot, the nav metric of the episodes
        that followed the search, ``seconds``...).
    """
    checks = (("n_samples", n_samples, 1), ("candidates", candidates, 2), ("horizon", horizon, 1))
    for name, value, low in (*checks, ("noise_replicas", noise_replicas, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"generate_pairs: {name} must be an int >= {low}, got {value!r}")
    if isinstance(n_envs, bool) or not isinstance(n_envs, int) or n_envs < 1:
        raise ValueError(f"generate_pairs: n_envs must be a positive int, got {n_envs!r}")
    table = DWA_PARAMS
    default = table.default.astype(np.float32)
    rng = np.random.default_rng(seed)
    # One fixed library for every state, defaults first, so a label is a choice among K vectors.
    vectors = _library(library, table, default, candidates, rng)  # [K, P]: ints rounded, as the env applies them
    unit = table.to_unit(vectors)
    candidates = len(vectors)
    slots = candidates * noise_replicas + 1
    batch = NavBatch(
        n_envs * slots, barn_dir=barn_dir, worlds=worlds, max_steps=MAX_EPISODE_STEPS, noise=True, reward=reward
    )
    sources = np.arange(n_envs) * slots
    # [G, R * K]: replica r of candidate k at r * K + k; column 0 drives the defaults with the episode's own noise.
    copies = sources[:, None] + 1 + np.arange(candidates * noise_replicas)[None, :]
    branches = copies[:, :candidates]  # replica 0: the episode's own noise
    episode = np.zeros(n_envs, dtype=np.int64)
    next_episode = 0

    def start(g: int) -> None:
        nonlocal next_episode
        batch.reset(int(sources[g]), rng)
        episode[g], next_episode = next_episode, next_episode + 1

    for g in range(n_envs):
        start(g)
    images, labels, groups = [], [], []
    gains, skipped, chosen = [], 0, np.zeros(candidates, dtype=np.int64)
    t0 = time.perf_counter()
    bar = tqdm(total=n_samples, desc="pairs", unit="pair", disable=not progress_bar)
    env_steps, metrics = 0, []
    while len(labels) < n_samples:
        for g in range(n_envs):
            clone_slot(batch, int(sources[g]), copies[g])
            for d in copies[g, candidates:]:  # the other replicas: fresh sensor and actuation noise
                batch.sim.rngs[d] = np.random.default_rng(rng.integers(2**63))
        elapsed = batch.steps[sources].copy()
        batch.steps[copies.ravel()] = 0  # copies never time out within the window
        actions = np.tile(default, (batch.n, 1))
        actions[copies] = np.tile(vectors, (noise_replicas, 1))
        alive = ~batch.done
        returns = np.zeros(batch.n)
        ends: dict[int, dict[str, Any]] = {}
        frames, velocities, alives = [], [], []  # per step of the window: [N, H, W, 3], [N, 2], [N]
        for _ in range(horizon):
            frames.append(batch.costmap_obs(image_size))
            alives.append(alive.copy())
            rewards, terminated, truncated, infos = batch.step(actions)
            velocities.append(batch.sim.velocity.copy())
            env_steps += int(alive.sum())
            returns += np.where(alive, rewards, 0.0)
            ends.update((int(i), infos[i]) for i in np.flatnonzero(alive & (terminated | truncated)))
            alive &= ~(terminated | truncated)
        if not np.array_equal(batch.sim.pose[branches[:, 0]], batch.sim.pose[sources]):
            raise RuntimeError(
                "generate_pairs: a copied episode did not replay its source with the same parameters; "
                "clone_slot misses part of the simulator state (envs changed?)"
            )
        for g in range(n_envs):
            score = returns[copies[g]].reshape(noise_replicas, candidates).mean(axis=0)
            best = score.max()
            ties = np.flatnonzero(score >= best - TIE_TOLERANCE)
            k = int(ties[np.argmin(np.square(unit[ties] - unit[0]).sum(axis=1))])
            branch = int(branches[g, k])
            if best - score.min() < TIE_TOLERANCE:
                skipped += 1
            else:
                if temperature is None:
                    target = vectors[k].astype(np.float64)
                else:
                    weights = np.exp((score - best) / temperature)
                    target = weights @ vectors.astype(np.float64) / weights.sum()
                for h in range(horizon):
                    if len(labels) == n_samples or not alives[h][branch]:
                        break
                    label = target
                    if velocity_labels:
                        next_velocity = np.clip(velocities[h][branch], VELOCITY_LOW, VELOCITY_HIGH)
                        label = np.concatenate([label, next_velocity])
                    images.append(frames[h][branch].transpose(2, 0, 1))
                    labels.append(label)
                    groups.append(episode[g])
                    bar.update(1)
                gains.append(best - score[0])
                chosen[k] += 1
            # The episode goes on from the end of the chosen branch.
            clone_slot(batch, branch, [int(sources[g])])
            batch.steps[sources[g]] = elapsed[g] + horizon
            if branch in ends or batch.steps[sources[g]] >= MAX_EPISODE_STEPS:
                end = ends.get(branch) or batch.info(int(sources[g]), timeout=True)
                metrics.append(end["nav_metric"])
                start(g)
    bar.close()
    names = table.names + (VELOCITY_OUTPUTS if velocity_labels else ())
    data = SFTDataset(np.stack(images), np.stack(labels), np.array(groups), names)
    stats = {
        "pairs": len(data),
        "episodes": int(len(np.unique(data.groups))),
        "skipped_ties": skipped,
        "library": vectors.tolist(),
        "chosen": chosen.tolist(),
        "mean_return_gain_over_default": float(np.mean(gains)),
        "candidates": candidates,
        "horizon_steps": horizon,
        "temperature": temperature,
        "env_steps": env_steps,
        "search_episodes": len(metrics),
        "search_nav_metric": float(np.mean(metrics)) if metrics else None,
        "seconds": time.perf_counter() - t0,
    }
    return data, stats
