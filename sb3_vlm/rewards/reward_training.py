"""Data, training and held-out evaluation of the :class:`~sb3_vlm.rewards.reward_net.RewardNet`.

Windows are logged by rolling the prompt-selection env with a uniformly random valid prompt per window on training
worlds (:func:`collect_windows`); each row keeps the inputs the network sees and the outcomes it predicts, plus the
episode's BARN metric for evaluation. The split is by episode, so no held-out window shares an episode with a
training one.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from scipy import stats
from tqdm.auto import tqdm

from sb3_vlm._validation import check_int
from sb3_vlm.rewards.reward_net import RewardNet, RewardNetConfig

__all__ = ["WindowData", "collect_windows", "evaluate_reward_net", "fit_reward_net", "split_by_episode"]

_FIELDS = ("features", "prompts", "params", "returns", "episodes", "success", "nav_metric")


@dataclass
class WindowData:
    """
    Logged control windows.

    :param features: ``[N, F]`` float32 image features at the window start.
    :param prompts: ``[N]`` int prompt index.
    :param params: ``[N, P]`` float32 parameters of the window's first step, ``[-1, 1]`` units.
    :param returns: ``[N]`` BarnNav return of the window (reward units).
    :param episodes: ``[N]`` int episode id.
    :param success: ``[N]`` bool: the window's episode reached the goal.
    :param nav_metric: ``[N]`` BARN metric of the window's episode.
    """

    features: np.ndarray
    prompts: np.ndarray
    params: np.ndarray
    returns: np.ndarray
    episodes: np.ndarray
    success: np.ndarray
    nav_metric: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.features)
        for name in _FIELDS:
            value = np.asarray(getattr(self, name))
            expected_ndim = 2 if name in ("features", "params") else 1
            if value.ndim != expected_ndim or len(value) != n:
                raise ValueError(f"WindowData: {name} must have {expected_ndim} dims and {n} rows, got {value.shape}")
            setattr(self, name, value)
        if not all(np.all(np.isfinite(getattr(self, k))) for k in ("features", "params", "returns", "nav_metric")):
            raise ValueError("WindowData: features, params, returns and nav_metric must be finite")

    def __len__(self) -> int:
        return len(self.features)

    def subset(self, index: np.ndarray) -> WindowData:
        return WindowData(*(getattr(self, k)[index] for k in _FIELDS))

    def save(self, path: str | os.PathLike) -> Path:
        """Write a ``.npz`` (no pickle)."""
        path = Path(path)
        np.savez_compressed(path, **{k: getattr(self, k) for k in _FIELDS})
        return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")

    @classmethod
    def load(cls, path: str | os.PathLike) -> WindowData:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in _FIELDS if k not in f.files]
            if missing:
                raise ValueError(f"{path}: not a window file, missing arrays {missing} (has {f.files})")
            return cls(*(f[k] for k in _FIELDS))


def collect_windows(env: Any, episodes: int, seed: int = 0, progress_bar: bool = False) -> WindowData:
    """
    Roll ``episodes`` episodes of a :class:`~sb3_vlm.rewards.prompt_env.PromptSelection` env, each window with a
    uniformly random valid prompt.

    :param env: The prompt-selection env (its ``info`` gives the prompt, parameters and true return).
    :param seed: Seed of the first reset (episode ``e`` resets with ``seed + e``) and of the prompt choices.
    """
    check_int(episodes, "episodes", owner="collect_windows")
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {k: [] for k in _FIELDS}
    for e in tqdm(range(episodes), desc="episodes", disable=not progress_bar):
        obs, _ = env.reset(seed=seed + e)
        done, start = False, len(rows["returns"])
        while not done:
            action = int(rng.choice(np.flatnonzero(env.action_masks())))
            next_obs, _, terminated, truncated, info = env.step(action)
            rows["features"].append(obs)
            rows["prompts"].append(info["prompt"])
            rows["params"].append(info["params_unit"])
            rows["returns"].append(info["true_reward"])
            obs, done = next_obs, terminated or truncated
        n = len(rows["returns"]) - start
        rows["episodes"] += [e] * n
        rows["success"] += [bool(info["success"])] * n
        rows["nav_metric"] += [float(info["nav_metric"])] * n
    return WindowData(
        features=np.asarray(rows["features"], dtype=np.float32),
        prompts=np.asarray(rows["prompts"], dtype=np.int64),
        params=np.asarray(rows["params"], dtype=np.float32),
        returns=np.asarray(rows["returns"], dtype=np.float64),
        episodes=np.asarray(rows["episodes"], dtype=np.int64),
        success=np.asarray(rows["success"], dtype=bool),
        nav_metric=np.asarray(rows["nav_metric"], dtype=np.float64),
    )


def split_by_episode(data: WindowData, val_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(train, val)``; a fraction ``val_fraction`` of the episodes (at least 1) is held out."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"split_by_episode: val_fraction must be in (0, 1), got {val_fraction}")
    ids = np.unique(data.episodes)
    if len(ids) < 2:
        raise ValueError(f"split_by_episode: needs at least 2 episodes to hold some out, got {len(ids)}")
    held = np.random.default_rng(seed).permutation(ids)[: max(1, round(val_fraction * len(ids)))]
    is_val = np.isin(data.episodes, held)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def _corr(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson correlation, or None when either side is constant or has fewer than 3 values."""
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(stats.pearsonr(x, y).statistic)


def _auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """ROC AUC (Mann-Whitney U / n_pos n_neg), or None without both classes."""
    pos, neg = scores[labels], scores[~labels]
    if not len(pos) or not len(neg):
        return None
    return float(stats.mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg)))


def evaluate_reward_net(net: RewardNet, data: WindowData) -> dict[str, Any]:
    """
    Held-out quality of ``net`` on ``data``.

    :return: ``window_return_corr`` (predicted vs true window return), ``nav_metric_corr`` (per episode: sum of the
        predicted returns vs the episode's BARN metric), ``true_return_nav_metric_corr`` (the same with the true
        returns: what a perfect return predictor would reach), ``success_auc`` (window success probability vs the
        episode's success), sizes. Correlations and AUC are None when undefined (a constant side, one class).
    """
    pred, prob = net.predict(data.features, data.prompts, data.params)
    ids, inverse = np.unique(data.episodes, return_inverse=True)
    per_episode_pred = np.bincount(inverse, weights=pred)
    per_episode_true = np.bincount(inverse, weights=data.returns)
    metric = np.zeros(len(ids))
    metric[inverse] = data.nav_metric
    return {
        "window_return_corr": _corr(pred, data.returns),
        "nav_metric_corr": _corr(per_episode_pred, metric),
        "true_return_nav_metric_corr": _corr(per_episode_true, metric),
        "success_auc": _auc(prob, data.success.astype(bool)),
        "return_mae": float(np.mean(np.abs(pred - data.returns))),
        "windows": len(data),
        "episodes": len(ids),
    }


def fit_reward_net(
    data: WindowData,
    prompts: tuple[str, ...],
    param_names: tuple[str, ...],
    *,
    hidden: tuple[int, ...] = (256, 128),
    epochs: int = 200,
    lr: float = 1e-3,
    batch_size: int = 256,
    weight_decay: float = 1e-4,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[RewardNet, dict[str, Any]]:
    """
    Train a :class:`RewardNet` (Adam; MSE on the standardised window return + BCE on success). A fraction
    ``val_fraction`` of the episodes is held out for the reported metrics; the same fraction of the remaining ones
    picks the epoch (lowest loss), so the held-out numbers are not tuned on.

    :return: The network (eval mode) and metrics: held-out ones of :func:`evaluate_reward_net` under ``"val"``,
        the same on the training windows under ``"train"``, ``best_epoch`` and its ``stop_loss``, ``seconds``.
    """
    if len(np.unique(data.prompts)) and int(data.prompts.max()) >= len(prompts):
        raise ValueError(f"fit_reward_net: prompt index {int(data.prompts.max())} but only {len(prompts)} prompts")
    t0 = time.perf_counter()
    rest_idx, val_idx = split_by_episode(data, val_fraction, seed)
    rest, val = data.subset(rest_idx), data.subset(val_idx)
    train_idx, stop_idx = split_by_episode(rest, val_fraction, seed + 1)
    train, stop = rest.subset(train_idx), rest.subset(stop_idx)
    net = _fresh_net(train, prompts, param_names, hidden, seed)
    optimizer = th.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    stop_loss, best_epoch = _train(
        net, optimizer, _tensors(train, net.config), _tensors(stop, net.config), epochs, batch_size, seed
    )
    metrics = {
        "val": evaluate_reward_net(net, val),
        "train": evaluate_reward_net(net, train),
        "best_epoch": best_epoch,
        "stop_loss": stop_loss,
        "seconds": time.perf_counter() - t0,
    }
    return net, metrics


def _train(
    net: RewardNet,
    optimizer: th.optim.Optimizer,
    train: tuple[th.Tensor, ...],
    stop: tuple[th.Tensor, ...],
    epochs: int,
    batch_size: int,
    seed: int,
) -> tuple[float, int]:
    """Train ``epochs`` epochs and keep the weights of the epoch with the lowest loss on ``stop`` (the network ends
    in eval mode); that loss and epoch."""
    generator = th.Generator().manual_seed(seed)
    best = (float("inf"), 0, {k: v.clone() for k, v in net.state_dict().items()})
    for epoch in range(epochs):
        net.train()
        for rows in th.randperm(len(train[0]), generator=generator).split(batch_size):
            optimizer.zero_grad()
            _loss(net, tuple(t[rows] for t in train)).backward()
            optimizer.step()
        net.eval()
        with th.no_grad():
            stop_loss = float(_loss(net, stop))
        if stop_loss < best[0]:
            best = (stop_loss, epoch, {k: v.clone() for k, v in net.state_dict().items()})
    net.load_state_dict(best[2])
    net.eval()
    return best[0], best[1]


def _fresh_net(
    train: WindowData, prompts: tuple[str, ...], param_names: tuple[str, ...], hidden: tuple[int, ...], seed: int
) -> RewardNet:
    """A new network (weights from ``seed``) with the return and feature statistics of the training windows."""
    config = RewardNetConfig(
        prompts=prompts,
        param_names=param_names,
        feature_dim=train.features.shape[1],
        hidden=hidden,
        return_mean=float(train.returns.mean()),
        return_std=float(train.returns.std() + 1e-6),
    )
    with th.random.fork_rng(devices=[]):
        th.manual_seed(seed)
        net = RewardNet(config)
    net.feature_mean.copy_(th.as_tensor(train.features.mean(0)))
    # Near-constant feature dimensions would blow up on held-out images: floor each std at a tenth of the mean.
    std = train.features.std(0)
    net.feature_std.copy_(th.as_tensor(np.maximum(std, 0.1 * std.mean() + 1e-6)))
    return net


def _tensors(data: WindowData, config: RewardNetConfig) -> tuple[th.Tensor, ...]:
    """Features, prompts, parameters, standardised return and success of the windows, as tensors."""
    target = (data.returns - config.return_mean) / config.return_std
    return (
        th.as_tensor(data.features, dtype=th.float32),
        th.as_tensor(data.prompts),
        th.as_tensor(data.params, dtype=th.float32),
        th.as_tensor(target, dtype=th.float32),
        th.as_tensor(data.success, dtype=th.float32),
    )


def _loss(net: RewardNet, batch: tuple[th.Tensor, ...]) -> th.Tensor:
    """MSE on the standardised return + BCE on success."""
    out = net(*batch[:3])
    functional = th.nn.functional
    return functional.mse_loss(out[:, 0], batch[3]) + functional.binary_cross_entropy_with_logits(out[:, 1], batch[4])
