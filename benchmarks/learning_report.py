"""Curves of ``benchmarks/learning.py``: read from a run's TensorBoard log, drawn into ``docs/learning_curves.png``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from sample_efficiency import mean_curve

RETURN_TAG, VAL_TAG = "rollout/ep_rew_mean", "train/Test_nav_metric"
"""SB3's training return (mean of the last 100 episodes) and the in-training evaluation's nav metric (on the
validation worlds unless the run said ``eval_worlds="test"``)."""


def read_curves(run_dir: Path) -> dict[str, Any]:
    """A run's curves from every TensorBoard event file of ``run_dir/tb`` (a resumed run has several):
    ``train_return`` and ``val`` as ``[{"env_steps", "value"/"nav_metric"}]``, and ``return_first_last``: the mean
    training return over the first and the last 10 % of the steps after learning starts."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    points: dict[str, dict[int, float]] = {RETURN_TAG: {}, VAL_TAG: {}}
    for event_file in sorted((run_dir / "tb").rglob("events.out.tfevents.*")):
        events = EventAccumulator(str(event_file), size_guidance={"scalars": 0})
        events.Reload()
        for tag in points:
            if tag in events.Tags()["scalars"]:
                points[tag].update({e.step: e.value for e in events.Scalars(tag)})
    returns = sorted(points[RETURN_TAG].items())
    saved = json.loads((run_dir / "run_config.json").read_text())
    starts = _learning_starts(saved)
    after = [(s, v) for s, v in returns if s >= starts] or returns
    span = after[-1][0] - after[0][0] if after else 0
    first = [v for s, v in after if s <= after[0][0] + 0.1 * span]
    last = [v for s, v in after if s >= after[-1][0] - 0.1 * span]
    return {
        "run": str(run_dir),
        "train_return": [{"env_steps": s, "value": round(v, 3)} for s, v in returns],
        "val": [{"env_steps": s, "nav_metric": round(v, 4)} for s, v in sorted(points[VAL_TAG].items())],
        "return_first_last": (round(float(np.mean(first)), 3), round(float(np.mean(last)), 3)) if after else None,
    }


def _learning_starts(saved: dict[str, Any]) -> int:
    from sb3_vlm.zoo import default_conf, load_zoo_config

    conf = saved.get("conf_file") or default_conf(saved["policy"])
    cfg = load_zoo_config(conf, saved.get("env"), saved.get("hyperparams"))
    return int(cfg.algo_kwargs.get("learning_starts", 100))


def plot(result: dict[str, Any], path: Path) -> None:
    """Training return (left) and validation nav metric (right) vs environment steps, per route, mean and 95 %
    band over seeds; default DWA and the best constant on the same validation worlds as lines on the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for route, color in (("applr", "tab:blue"), ("vlm", "tab:red")):
        curves = result.get(f"{route}_curves")
        if not curves:
            continue
        label = f"{'APPLR (MLP, laser)' if route == 'applr' else 'image route'}, {len(curves)} seeds"
        for ax, key, field in ((left, "train_return", "value"), (right, "val", "nav_metric")):
            if all(c[key] for c in curves):
                steps, mean, half = mean_curve([c[key] for c in curves], field)
                ax.plot(steps, mean, color=color, label=label)
                ax.fill_between(steps, mean - half, mean + half, color=color, alpha=0.2)
    refs = result.get("references", {})  # the reward-ordering stage ran them on the validation worlds
    for key, label, style in (("default", "default DWA", "k--"),
                              (f"constant:{result.get('best_constant')}", "best constant", "g:")):  # fmt: skip
        if key in refs:
            right.axhline(refs[key]["nav_metric"], color=style[0], linestyle=style[1:], label=label)
    left.set(xlabel="environment steps", ylabel="training return (mean of 100 episodes)")
    right.set(xlabel="environment steps", ylabel="nav metric, validation worlds")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
