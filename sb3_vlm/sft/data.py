"""Supervised pairs and their handling: :class:`SFTDataset` (images, labels, episodes, prompts; ``.npz`` or FTRL's
SFT files), FTRL's label normalisation and the split by episode."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["NORM_EPS", "SFTDataset", "normalization_stats", "normalize", "split_train_val"]

NORM_EPS = 1e-8
"""FTRL's epsilon of the label normalisation ``(y - mean) / (std + eps)``."""


@dataclass
class SFTDataset:
    """
    (scene image, planner parameters) pairs.

    :param images: ``[N, 3, H, W]`` uint8, channel-first (what the extractor sees after SB3's ``VecTransposeImage``).
    :param labels: ``[N, P]`` targets in physical units (float).
    :param groups: ``[N]`` int episode id of each pair, or None; the validation split keeps episodes whole.
    :param names: The ``P`` parameter names, or None.
    :param prompts: ``[N]`` str: the prompt each label was searched for (:mod:`sb3_vlm.sft.prompts`), or None.
    """

    images: np.ndarray
    labels: np.ndarray
    groups: np.ndarray | None = None
    names: tuple[str, ...] | None = None
    prompts: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.images = np.asarray(self.images)
        self.labels = np.asarray(self.labels, dtype=np.float64)
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(
                f"SFTDataset: images must be uint8 [N, 3, H, W], got {self.images.dtype} {self.images.shape}"
            )
        if self.labels.ndim != 2 or len(self.labels) != len(self.images):
            raise ValueError(
                f"SFTDataset: labels must be [N, P] with N = {len(self.images)} images, got {self.labels.shape}"
            )
        if not np.all(np.isfinite(self.labels)):
            raise ValueError("SFTDataset: labels must be finite, got NaN or inf")
        if self.groups is not None:
            self.groups = np.asarray(self.groups, dtype=np.int64)
            if self.groups.shape != (len(self.images),):
                raise ValueError(f"SFTDataset: groups must be [N] = [{len(self.images)}], got {self.groups.shape}")
        if self.prompts is not None:
            self.prompts = np.asarray(self.prompts, dtype=np.str_)
            if self.prompts.shape != (len(self.images),):
                raise ValueError(f"SFTDataset: prompts must be [N] = [{len(self.images)}], got {self.prompts.shape}")
        if self.names is not None:
            self.names = tuple(str(n) for n in self.names)
            if len(self.names) != self.labels.shape[1]:
                raise ValueError(
                    f"SFTDataset: {self.labels.shape[1]} label columns but {len(self.names)} names: {self.names}"
                )

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_params(self) -> int:
        """``P``, the label columns."""
        return int(self.labels.shape[1])

    def save(self, path: str | os.PathLike) -> Path:
        """Write the arrays to a ``.npz`` file (no pickle) and return its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {"images": self.images, "labels": self.labels}
        if self.groups is not None:
            arrays["groups"] = self.groups
        if self.names is not None:
            arrays["names"] = np.array(self.names, dtype=np.str_)
        if self.prompts is not None:
            arrays["prompts"] = self.prompts
        with open(path, "wb") as file:
            np.savez_compressed(file, **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, image_size: tuple[int, int] | None = None) -> SFTDataset:
        """Read a file written by :meth:`save` (``allow_pickle=False``), or FTRL's SFT data (a ``.json``, a
        ``data.csv`` or a directory of ``actor_*/data.csv``, see :mod:`sb3_vlm.formats.ftrl_sft`), its images
        resized to ``image_size`` ``(H, W)``."""
        if Path(path).suffix != ".npz":
            from sb3_vlm.formats.ftrl_sft import read_ftrl_sft

            if image_size is None:
                raise ValueError(f"SFTDataset.load: FTRL SFT data {path} needs the image_size to resize to")
            ftrl = read_ftrl_sft(path, image_size)
            return cls(ftrl.images, ftrl.labels, ftrl.groups, ftrl.names)
        with np.load(path, allow_pickle=False) as data:
            names = tuple(data["names"].tolist()) if "names" in data else None
            groups = data["groups"] if "groups" in data else None
            prompts = data["prompts"] if "prompts" in data else None
            return cls(data["images"], data["labels"], groups, names, prompts)


def normalization_stats(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """
    FTRL's label statistics.

    :param labels: ``[N, P]`` physical values.
    :return: Column mean and population std (ddof 0), each ``[P]`` float64.
    """
    labels = np.asarray(labels, dtype=np.float64)
    if labels.ndim != 2 or len(labels) == 0:
        raise ValueError(f"normalization_stats: labels must be a non-empty [N, P] array, got shape {labels.shape}")
    return labels.mean(axis=0), labels.std(axis=0)


def normalize(labels: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(labels - mean) / (std + NORM_EPS)``: ``[N, P]`` physical -> ``[N, P]`` float32 normalised."""
    return ((np.asarray(labels, dtype=np.float64) - mean) / (std + NORM_EPS)).astype(np.float32)


def split_train_val(
    n: int, val_fraction: float, groups: np.ndarray | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """
    Random train/validation split of ``n`` pairs; with ``groups`` whole groups (episodes) go to one side, so
    near-duplicate consecutive frames never straddle the split.

    :param n: Number of pairs (>= 2).
    :param val_fraction: Target fraction of pairs in the validation split, in (0, 1).
    :param groups: ``[n]`` group id per pair, or None.
    :param seed: RNG seed.
    :return: Sorted train and validation indices, both non-empty.
    """
    if n < 2:
        raise ValueError(f"split_train_val needs at least 2 pairs, got {n}")
    rng = np.random.default_rng(seed)
    if groups is None:
        order = rng.permutation(n)
        n_val = min(max(1, round(n * val_fraction)), n - 1)
        return np.sort(order[n_val:]), np.sort(order[:n_val])
    ids = rng.permutation(np.unique(groups))
    if len(ids) < 2:
        raise ValueError(f"split_train_val: a split by group needs at least 2 groups, got {len(ids)}")
    sizes = np.array([np.count_nonzero(groups == g) for g in ids])
    # Smallest prefix of the shuffled groups that reaches the target, keeping at least one group for training.
    k = int(np.searchsorted(np.cumsum(sizes), n * val_fraction)) + 1
    val = np.isin(groups, ids[: min(max(k, 1), len(ids) - 1)])
    return np.flatnonzero(~val), np.flatnonzero(val)
