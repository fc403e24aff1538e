"""Training of the flow-matching expert on precomputed features: supervised flow matching, and reflow (k-rectified
flow, Liu et al. 2022) distillation into a nearly straight, one-step student (docs/guide/flow.md)."""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch as th

from sb3_vlm.flow.head import FlowMatchingHead

logger = logging.getLogger(__name__)


@dataclass
class FitConfig:
    """Optimisation of a flow head.

    :param steps: Gradient steps.
    :param batch_size: Samples per step.
    :param lr: Peak learning rate (AdamW; linear warm-up over 5 % of the steps, then cosine decay).
    :param weight_decay: AdamW weight decay.
    :param save_freq: Steps between saves into ``out/step_<k>`` (0: only the end).
    :param seed: Seed of batch order, times and fresh noise.
    :param couplings_per_feature: Reflow only: noise draws (couplings) per training feature.
    """

    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    save_freq: int = 0
    seed: int = 0
    couplings_per_feature: int = 1


REFLOW_FIT = FitConfig(steps=20000, lr=3e-3, couplings_per_feature=64)
"""Default optimisation of :func:`reflow` (``sb3-vlm distill``), chosen on held-out *training* pairs of the
label search (``benchmarks/bench_reflow.py``): 64 couplings per feature, more steps and a higher rate than flow
matching on the data."""


def fit(
    head: FlowMatchingHead,
    features: th.Tensor,
    targets: th.Tensor,
    config: FitConfig | None = None,
    noise: th.Tensor | None = None,
    out: str | os.PathLike | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train ``head`` in place on ``features [N, F]`` and ``targets [N * K, D]``; the loss per step.

    Target row ``r`` is conditioned on feature ``r // K`` (``K = len(targets) // N``: several couplings per
    feature, as :func:`couplings` lays them out; ``K = 1`` for supervised pairs).

    :param noise: Coupled starting points ``[N * K, D]`` (reflow); None draws fresh noise each step (flow matching).
    :param out: Directory for periodic (``step_<k>``) and final saves; None saves nothing.
    :param on_step: Called with (step, loss) after every step (progress bars, loggers).
    """
    config = config or FitConfig()
    if len(targets) % max(len(features), 1) or (noise is not None and len(noise) != len(targets)):
        raise ValueError(
            f"targets (and noise) must have a multiple of the features' rows (K per feature): got features "
            f"{len(features)}, targets {len(targets)}" + ("" if noise is None else f", noise {len(noise)}")
        )
    per_feature = len(targets) // len(features)
    generator = th.Generator().manual_seed(config.seed)
    optimizer = th.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    # Imported here: transformers' optimization module pulls in peft and bitsandbytes (seconds, and a warning line
    # in every sb3-vlm command that loads a policy).
    from transformers import get_cosine_schedule_with_warmup

    schedule = get_cosine_schedule_with_warmup(optimizer, max(1, config.steps // 20), config.steps)
    head.train()
    losses = []
    for step in range(1, config.steps + 1):
        rows = th.randint(len(targets), (min(config.batch_size, len(targets)),), generator=generator)
        t = 1e-3 + (1 - 1e-3) * th.rand(len(rows), generator=generator)
        x0 = noise[rows] if noise is not None else th.randn(len(rows), targets.shape[1], generator=generator)
        loss = head.loss(targets[rows], features[rows // per_feature], noise=x0, t=t)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step, losses[-1])
        if out is not None and config.save_freq and step % config.save_freq == 0 and step < config.steps:
            head.save_pretrained(Path(out) / f"step_{step}")
    head.eval()
    if out is not None:
        head.save_pretrained(out)
    return losses


@th.no_grad()
def couplings(
    teacher: FlowMatchingHead,
    features: th.Tensor,
    num_steps: int | None = None,
    seed: int = 0,
    per_feature: int = 1,
    batch_rows: int = 8192,
) -> tuple[th.Tensor, th.Tensor]:
    """Noise ``x0 [N * K, D]`` and the teacher's ``num_steps``-step samples ``x1 [N * K, D]`` from it: ``K =
    per_feature`` draws per feature, row ``r`` from feature ``r // K`` (sampled ``batch_rows`` rows at a time, so
    the repeated features never exist all at once)."""
    generator = th.Generator().manual_seed(seed)
    x0 = th.randn(len(features) * per_feature, teacher.config.dim, generator=generator)
    step = max(1, batch_rows // per_feature)
    x1 = [
        teacher.sample(
            features[i : i + step].repeat_interleave(per_feature, dim=0),
            x0[i * per_feature : (i + step) * per_feature],
            num_steps,
        )
        for i in range(0, len(features), step)
    ]
    return x0, th.cat(x1)


def reflow(
    teacher: FlowMatchingHead,
    features: th.Tensor,
    config: FitConfig | None = None,
    rounds: int = 1,
    teacher_steps: int | None = None,
    out: str | os.PathLike | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> FlowMatchingHead:
    """A one-step student distilled from ``teacher`` by ``rounds`` of reflow on ``features [N, F]``.

    The teacher is frozen and never changes; the student starts as its exact copy. Each round draws new couplings
    (``config.couplings_per_feature`` per feature) from the current teacher with ``teacher_steps`` Euler steps
    (default: its config's) and trains the student on them; later rounds use the previous student as teacher. The
    student's config samples with 1 step.

    :param config: Optimisation; default :data:`REFLOW_FIT`.
    """
    config = config or REFLOW_FIT
    teacher.requires_grad_(False).eval()
    n_params = sum(p.numel() for p in teacher.parameters())
    logger.info("teacher loaded and frozen: %d parameters", n_params)
    student = copy.deepcopy(teacher).requires_grad_(True)
    logger.info("student initialised from the teacher (%d trainable parameters)", n_params)
    source = teacher
    for k in range(rounds):
        x0, x1 = couplings(source, features, teacher_steps, config.seed + k, config.couplings_per_feature)
        round_dir = None if out is None else Path(out) / (f"round_{k + 1}" if rounds > 1 else "")
        fit(student, features, x1, config, noise=x0, out=round_dir, on_step=on_step)
        first = slice(None, None, config.couplings_per_feature)  # one coupling per feature: a fixed yardstick
        loss = fit_loss(student, features, x0[first], x1[first])
        logger.info("reflow round %d/%d: %d couplings, final loss %.4f", k + 1, rounds, len(x0), loss)
        source = copy.deepcopy(student).requires_grad_(False)
    student.config.num_steps = 1
    if out is not None:
        student.save_pretrained(out)
    return student


@th.no_grad()
def fit_loss(head: FlowMatchingHead, features: th.Tensor, x0: th.Tensor, x1: th.Tensor) -> float:
    """Mean rectified-flow loss of ``head`` on coupled pairs at times 0.1, 0.3, ..., 0.9 (a fixed yardstick)."""
    times = th.linspace(0.1, 0.9, 5)
    return float(sum(head.loss(x1, features, noise=x0, t=t.expand(len(x0))) for t in times) / len(times))


@th.no_grad()
def straightness(head: FlowMatchingHead, features: th.Tensor, noise: th.Tensor, num_steps: int = 32) -> float:
    """``S = E int_0^1 |(x1 - x0) - v(x_t, t)|^2 dt`` along the head's own Euler paths (0: straight lines)."""
    x, total = noise.clone(), 0.0
    end = head.sample(features, noise=noise, num_steps=num_steps)
    for k in range(num_steps):
        v = head.velocity(x, th.tensor(k / num_steps), features)
        total += float((end - noise - v).pow(2).sum(dim=1).mean()) / num_steps
        x = x + v / num_steps
    return total
