"""SFT labels by receding-horizon search in the embedded simulator (``sb3-vlm pretrain``, step 1): every window, copies
of each episode try a library of DWA vectors and the best labels the states of its branch, which the episode then
follows (docs/guide/supervised.md "How the search works")."""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from envs import NavBatch
from envs.nav_env import VELOCITY_HIGH, VELOCITY_LOW, RewardConfig
from envs.planners import DWA_PARAMS
from envs.render import DEFAULT_IMAGE_SIZE
from sb3_vlm._constants import VELOCITY_OUTPUTS
from sb3_vlm._validation import check_int, settings_from
from sb3_vlm.sft.data import SFTDataset

__all__ = ["LIBRARIES", "LabelSettings", "clone_slot", "generate_pairs"]

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


LIBRARIES = ("lhs", "grid")
"""Candidate libraries of :class:`LabelSettings`."""


@dataclass
class LabelSettings:
    """One label search of :func:`generate_pairs` (see the module docstring)."""

    n_samples: int
    """Pairs to return."""
    barn_dir: str | Path | None = None
    """Real BARN worlds, or None for generated ones."""
    worlds: str | Sequence[int] | None = None
    """World set (``"train"``, ``"test"``, ``"all"``, ids, or None: the 250 training worlds, generated or of
    ``barn_dir``)."""
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE
    """``(height, width)`` of the scene images."""
    library: str = "lhs"
    """The ``K`` vectors tried from every state: ``"grid"`` (:data:`GRID`, ``K = 24``) or ``"lhs"`` (the defaults +
    ``candidates - 1`` Latin-hypercube vectors over every parameter's range)."""
    candidates: int = 24
    """``K`` of the ``"lhs"`` library, >= 2."""
    horizon: int = 12
    """Steps (0.5 s each) every candidate drives: the window of one label, >= 1."""
    n_envs: int = 8
    """Episodes rolled out side by side (the simulator holds ``n_envs * (K * noise_replicas + 1)`` robots)."""
    velocity_labels: bool = True
    """Append the velocity after the state's step on the chosen branch (FTRL's 9 outputs)."""
    temperature: float | None = None
    """None: the label is the best vector; a float ``T > 0`` (reward units; 10 = 1 m of progress): the softmax(return /
    T)-weighted mean of the library (soft labels: what an MSE head can fit when several vectors are about as good). The
    episode follows the best vector either way."""
    noise_replicas: int = 3
    """``R``: each candidate drives the window ``R`` times, the first copy with the episode's own noise, the others with
    fresh sensor and actuation noise, and scores the mean return. With ``R = 1`` the search knows the episode's future
    noise (it picks the fast vector that happens not to crash); ``R > 1`` prefers vectors that work whatever the noise,
    which an image policy (that cannot see the noise) can follow."""
    common_random_numbers: bool = False
    """``True``: in each replica after the first, every candidate draws the same fresh noise (common random numbers),
    so candidates are compared under the same futures and differ only by their vectors; ``False``: each copy draws its
    own."""
    seed: int = 0
    """Seed of worlds, noise and candidates."""
    progress_bar: bool = True
    """Show a tqdm bar."""
    reward: str | RewardConfig = "ftrl"
    """The objective candidates are scored by: a preset of ``envs.nav_env.REWARD_PRESETS`` or a
    :class:`~envs.nav_env.RewardConfig` (a prompt's objective, :mod:`sb3_vlm.sft.prompts`)."""

    def __post_init__(self) -> None:
        for name, minimum in (
            ("n_samples", 1),
            ("candidates", 2),
            ("horizon", 1),
            ("n_envs", 1),
            ("noise_replicas", 1),
        ):
            check_int(getattr(self, name), name, minimum, owner="LabelSettings")
        if self.library not in LIBRARIES:
            raise ValueError(f"LabelSettings: library must be one of {LIBRARIES}, got {self.library!r}")
        if self.temperature is not None and not self.temperature > 0:
            raise ValueError(f"LabelSettings: temperature must be None or > 0 (reward units), got {self.temperature!r}")


def _library(kind: str, table: Any, default: np.ndarray, candidates: int, rng: np.random.Generator) -> np.ndarray:
    """The ``[K, P]`` candidate vectors of :func:`generate_pairs` (``kind``: of :data:`LIBRARIES`), defaults first."""
    if kind == "grid":
        vectors = [default.copy()]
        for values in itertools.product(*GRID.values()):
            vector = default.copy()
            vector[[table.index(name) for name in GRID]] = values
            if not np.allclose(vector, default):
                vectors.append(vector)
        return table.validate(np.stack(vectors))
    unit = _latin_hypercube(rng, candidates, len(table))
    unit[0] = table.to_unit(default)
    vectors = table.validate(table.from_unit(unit))
    vectors[0] = default
    return vectors


def generate_pairs(settings: LabelSettings | int, *args: Any, **kwargs: Any) -> tuple[SFTDataset, dict[str, Any]]:
    """
    Build (scene image, good parameters) pairs by short-horizon parameter search (see the module docstring).

    :param settings: The search. The call form of sb3-vlm 0.1, ``generate_pairs(n_samples, **kwargs)`` with the names
        of :class:`LabelSettings`, still works for one release and warns (``DeprecationWarning``).
    :return: The pairs (images ``[N, 3, H, W]`` uint8, labels ``[N, P]`` physical, episode ids) and statistics
        (``library`` ``[K, 7]``, how often each vector was ``chosen``, ``skipped_ties``, the mean return gain of the
        chosen vector over the defaults, the simulated ``env_steps`` of every slot, the nav metric of the episodes
        that followed the search, ``seconds``...).
    """
    search = _LabelSearch(settings_from(LabelSettings, settings, args, kwargs, "generate_pairs"))
    while len(search.labels) < search.settings.n_samples:
        search.window()
    return search.result()


@dataclass
class _Window:
    """What every slot did over one window of ``horizon`` steps."""

    returns: np.ndarray  # [N] reward summed while alive
    ends: dict[int, dict[str, Any]]  # slot -> info of the step that ended its episode
    frames: list[np.ndarray]  # per step: [N, H, W, 3] scene before the step
    velocities: list[np.ndarray]  # per step: [N, 2] velocity after the step
    alives: list[np.ndarray]  # per step: [N] alive before the step


class _LabelSearch:
    """
    One run of :func:`generate_pairs`: the batched simulator, the ``n_envs`` episodes that follow the search (slot
    ``sources[g]`` each, its candidate copies after it) and the pairs so far.
    """

    def __init__(self, settings: LabelSettings):
        self.settings = s = settings
        self.default = DWA_PARAMS.default.astype(np.float32)
        self.rng = np.random.default_rng(s.seed)
        # One fixed library for every state, defaults first, so a label is a choice among K vectors.
        self.vectors = _library(s.library, DWA_PARAMS, self.default, s.candidates, self.rng)  # [K, P]: ints rounded
        self.unit = DWA_PARAMS.to_unit(self.vectors)
        k = len(self.vectors)
        slots = k * s.noise_replicas + 1
        self.batch = NavBatch(
            s.n_envs * slots,
            barn_dir=s.barn_dir,
            worlds=s.worlds,
            max_steps=MAX_EPISODE_STEPS,
            noise=True,
            reward=s.reward,
        )
        self.sources = np.arange(s.n_envs) * slots
        # [G, R * K]: replica r of candidate k at r * K + k; column 0 drives the defaults with the episode's own noise.
        self.copies = self.sources[:, None] + 1 + np.arange(k * s.noise_replicas)[None, :]
        self.branches = self.copies[:, :k]  # replica 0: the episode's own noise
        self.episode = np.zeros(s.n_envs, dtype=np.int64)
        self.next_episode = 0
        self.images: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.groups: list[int] = []
        self.gains: list[float] = []
        self.skipped, self.chosen = 0, np.zeros(k, dtype=np.int64)
        self.env_steps, self.metrics = 0, []
        self.started = time.perf_counter()
        self.bar = tqdm(total=s.n_samples, desc="pairs", unit="pair", disable=not s.progress_bar)
        for g in range(s.n_envs):
            self._start(g)

    def _start(self, g: int) -> None:
        """A new episode in slot ``sources[g]``."""
        self.batch.reset(int(self.sources[g]), self.rng)
        self.episode[g], self.next_episode = self.next_episode, self.next_episode + 1

    def window(self) -> None:
        """Branch every episode into its candidates, drive them one window, label the best branch, go on from it."""
        elapsed = self._branch_out()
        window = self._drive()
        for g in range(self.settings.n_envs):
            branch = self._label(g, window)
            self._continue(g, branch, elapsed[g], window.ends)

    def _branch_out(self) -> np.ndarray:
        """Copy every episode into its candidate slots; the episodes' step counts before the window."""
        batch = self.batch
        k = len(self.vectors)
        for g in range(self.settings.n_envs):
            clone_slot(batch, int(self.sources[g]), self.copies[g])
            for j, d in enumerate(self.copies[g, k:]):  # the other replicas: fresh sensor and actuation noise
                if j % k == 0 or not self.settings.common_random_numbers:  # common: one seed per replica
                    seed = self.rng.integers(2**63)
                batch.sim.rngs[d] = np.random.default_rng(seed)
        elapsed = batch.steps[self.sources].copy()
        batch.steps[self.copies.ravel()] = 0  # copies never time out within the window
        return elapsed

    def _drive(self) -> _Window:
        """Every slot drives ``horizon`` steps (the episodes and unused slots the defaults, copy ``r * K + k``
        vector ``k``); checks that the default branch replayed its episode."""
        batch, s = self.batch, self.settings
        actions = np.tile(self.default, (batch.n, 1))
        actions[self.copies] = np.tile(self.vectors, (s.noise_replicas, 1))
        alive = ~batch.done
        window = _Window(np.zeros(batch.n), {}, [], [], [])
        for _ in range(s.horizon):
            window.frames.append(batch.costmap_obs(s.image_size))
            window.alives.append(alive.copy())
            rewards, terminated, truncated, infos = batch.step(actions)
            window.velocities.append(batch.sim.velocity.copy())
            self.env_steps += int(alive.sum())
            window.returns += np.where(alive, rewards, 0.0)
            window.ends.update((int(i), infos[i]) for i in np.flatnonzero(alive & (terminated | truncated)))
            alive &= ~(terminated | truncated)
        if not np.array_equal(batch.sim.pose[self.branches[:, 0]], batch.sim.pose[self.sources]):
            raise RuntimeError(
                "generate_pairs: a copied episode did not replay its source with the same parameters; "
                "clone_slot misses part of the simulator state (envs changed?)"
            )
        return window

    def _label(self, g: int, window: _Window) -> int:
        """Score episode ``g``'s candidates, label the states of the best branch (unless all tie); that branch."""
        s = self.settings
        score = window.returns[self.copies[g]].reshape(s.noise_replicas, len(self.vectors)).mean(axis=0)
        best = score.max()
        ties = np.flatnonzero(score >= best - TIE_TOLERANCE)
        k = int(ties[np.argmin(np.square(self.unit[ties] - self.unit[0]).sum(axis=1))])  # nearest the defaults
        branch = int(self.branches[g, k])
        if best - score.min() < TIE_TOLERANCE:
            self.skipped += 1
            return branch
        if s.temperature is None:
            target = self.vectors[k].astype(np.float64)
        else:
            weights = np.exp((score - best) / s.temperature)
            target = weights @ self.vectors.astype(np.float64) / weights.sum()
        for h in range(s.horizon):
            if len(self.labels) == s.n_samples or not window.alives[h][branch]:
                break
            label = target
            if s.velocity_labels:
                next_velocity = np.clip(window.velocities[h][branch], VELOCITY_LOW, VELOCITY_HIGH)
                label = np.concatenate([label, next_velocity])
            self.images.append(window.frames[h][branch].transpose(2, 0, 1))
            self.labels.append(label)
            self.groups.append(int(self.episode[g]))
            self.bar.update(1)
        self.gains.append(best - score[0])
        self.chosen[k] += 1
        return branch

    def _continue(self, g: int, branch: int, elapsed: int, ends: dict[int, dict[str, Any]]) -> None:
        """Episode ``g`` goes on from the end of ``branch``; a new one starts if it ended."""
        source = int(self.sources[g])
        clone_slot(self.batch, branch, [source])
        self.batch.steps[source] = elapsed + self.settings.horizon
        if branch in ends or self.batch.steps[source] >= MAX_EPISODE_STEPS:
            end = ends.get(branch) or self.batch.info(source, timeout=True)
            self.metrics.append(end["nav_metric"])
            self._start(g)

    def result(self) -> tuple[SFTDataset, dict[str, Any]]:
        """The pairs and the statistics of :func:`generate_pairs`."""
        self.bar.close()
        s = self.settings
        names = DWA_PARAMS.names + (VELOCITY_OUTPUTS if s.velocity_labels else ())
        data = SFTDataset(np.stack(self.images), np.stack(self.labels), np.array(self.groups), names)
        stats = {
            "pairs": len(data),
            "episodes": int(len(np.unique(data.groups))),
            "skipped_ties": self.skipped,
            "library": self.vectors.tolist(),
            "chosen": self.chosen.tolist(),
            "mean_return_gain_over_default": float(np.mean(self.gains)),
            "candidates": len(self.vectors),
            "horizon_steps": s.horizon,
            "temperature": s.temperature,
            "env_steps": self.env_steps,
            "search_episodes": len(self.metrics),
            "search_nav_metric": float(np.mean(self.metrics)) if self.metrics else None,
            "seconds": time.perf_counter() - self.started,
        }
        return data, stats
