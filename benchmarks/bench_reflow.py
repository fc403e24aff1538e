"""Reflow, side by side: the flow teacher at 1, 2, 4 and all its steps vs the one-step reflow student.

Pipeline (all on this machine, the tiny backbone): scene/parameter pairs from the simulator's label search on the
training worlds (or ``--data``), the supervised stage (DPT head, MSE), a flow-matching teacher on the trained features,
reflow into a one-step student on the same backbone. On held-out pairs (whole episodes never trained on):

- ``*_distance``: mean L2 (normalised parameter units) from each sampler's output to the teacher's full-step sample
  from the same noise (``--draws`` noise draws per held-out state), and ``*_sliced_w1``: sliced Wasserstein-1
  between the sampled sets (noise drawn anew);
- ``*_straightness``: the rectified-flow straightness S of each head's own paths (0 = straight);
- ``*_latency_ms``: expert time per sample at batch 1 (the backbone's time is common to all and reported apart);
- with ``--barn-dir``: BARN nav metric (95 % interval) on the real test worlds of the MSE head, the teacher (all
  steps) and the student (1 step), every policy on the same worlds and seeds;
- with ``--plot``: a PNG of the three samplers' outputs on one held-out state (the one whose teacher samples spread
  most), in the two parameters that vary most there.

The student is trained with ``sb3-vlm distill``'s defaults (:data:`~sb3_vlm.flow.reflow.REFLOW_FIT`) unless told.
Prints one JSON line. Usage::

    python benchmarks/bench_reflow.py --barn-dir PATH/BARN [--samples 600] [--runs 2] [--plot docs/reflow_samples.png]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch as th

from envs.planners import DWA_PARAMS
from sb3_vlm.flow import REFLOW_FIT, FitConfig, FlowHeadConfig, FlowMatchingHead, couplings, straightness
from sb3_vlm.flow.policy import distill, train_flow_head
from sb3_vlm.policies import load_policy
from sb3_vlm.sft.data import SFTDataset, normalize, split_train_val
from sb3_vlm.sft.labels import LabelSettings, generate_pairs
from sb3_vlm.sft.training import LOSS_WEIGHTS, SFTConfig, make_sft_extractor, save_sft_checkpoint, train_sft
from sb3_vlm.workflows.evaluation import evaluate, summary

TEACHER_STEPS = 10


def sliced_w1(a: th.Tensor, b: th.Tensor, projections: int = 256, seed: int = 0) -> float:
    """Sliced Wasserstein-1 distance between equal-sized point sets ``[N, D]``."""
    g = th.Generator().manual_seed(seed)
    directions = th.randn(a.shape[1], projections, generator=g)
    directions /= directions.norm(dim=0, keepdim=True)
    pa, pb = (a @ directions).sort(dim=0).values, (b @ directions).sort(dim=0).values
    return float((pa - pb).abs().mean())


def latency_ms(head: FlowMatchingHead, feature: th.Tensor, steps: int, repeats: int = 50) -> float:
    """Median time (ms) of one deterministic sample at batch 1."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        head.act(feature, steps)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def plot_samples(
    heads: dict[str, tuple[FlowMatchingHead, int]], feature: th.Tensor, denormalize, file: Path, n: int = 300
) -> None:
    """One panel per ``label: (head, steps)``: ``n`` samples on one state ``feature [1, F]`` from the same noise, in
    the two physical parameters whose reference (first entry) samples vary most; the reference in grey behind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    noise = th.randn(n, next(iter(heads.values()))[0].config.dim, generator=th.Generator().manual_seed(0))
    samples = {k: denormalize(h.sample(feature.expand(n, -1), noise, steps)).numpy() for k, (h, steps) in heads.items()}
    reference = next(iter(samples.values()))
    i, j = np.argsort(reference.std(axis=0) / (DWA_PARAMS.high - DWA_PARAMS.low))[-2:][::-1]
    fig, axes = plt.subplots(1, len(samples), figsize=(3.2 * len(samples), 3.2), dpi=90, sharex=True, sharey=True)
    for ax, (label, points) in zip(axes, samples.items(), strict=True):
        ax.scatter(reference[:, i], reference[:, j], s=6, color="0.8")
        ax.scatter(points[:, i], points[:, j], s=6, color="C3")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel(DWA_PARAMS.names[i])
    axes[0].set_ylabel(DWA_PARAMS.names[j])
    fig.suptitle("one held-out state, same noise (grey: teacher, all steps)", fontsize=10)
    fig.tight_layout()
    file.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(file)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--barn-dir", type=Path, help="real BARN worlds (pairs from the training worlds, nav metric)")
    parser.add_argument("--data", type=Path, help="pairs .npz (sb3-vlm pretrain --save-data) instead of generating")
    parser.add_argument("--save-data", type=Path, help="write the generated pairs here (--data reruns on them)")
    parser.add_argument("--samples", type=int, default=600)
    parser.add_argument("--runs", type=int, default=2, help="runs per test world for the nav metric")
    parser.add_argument("--flow-train-steps", type=int, default=3000)
    parser.add_argument("--reflow-steps", type=int, default=REFLOW_FIT.steps)
    parser.add_argument("--reflow-lr", type=float, default=REFLOW_FIT.lr)
    parser.add_argument("--couplings-per-feature", type=int, default=REFLOW_FIT.couplings_per_feature)
    parser.add_argument("--draws", type=int, default=8, help="noise draws per held-out state for the distances")
    parser.add_argument("--plot", type=Path, help="write the samples of one held-out state to this PNG")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny sizes, 5 test worlds")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.samples, args.runs, args.flow_train_steps, args.reflow_steps = 48, 1, 100, 100
    th.manual_seed(args.seed)
    started = time.perf_counter()
    if args.data is not None:
        data = SFTDataset.load(args.data)
    else:
        data, _ = generate_pairs(LabelSettings(args.samples, barn_dir=args.barn_dir, worlds="train", seed=args.seed))
        if args.save_data is not None:  # rerun on the same pairs without the search
            data.save(args.save_data)
    data = SFTDataset(data.images, data.labels[:, : len(DWA_PARAMS.names)], data.groups, DWA_PARAMS.names)
    train_idx, val_idx = split_train_val(len(data), 0.2, data.groups, args.seed)
    train = SFTDataset(data.images[train_idx], data.labels[train_idx], None, data.names)
    held = SFTDataset(data.images[val_idx], data.labels[val_idx], None, data.names)

    extractor = make_sft_extractor(data.images.shape[1:], data.num_params, feature_cache_bytes=2**29, planner="DWA")
    train_sft(extractor, train, LOSS_WEIGHTS["DWA"][: data.num_params], SFTConfig(epochs=5, progress_bar=False))
    work = Path(tempfile.mkdtemp(prefix="bench_reflow_"))
    ckpt = save_sft_checkpoint(extractor, work / "sft")
    fit = FitConfig(steps=args.flow_train_steps, seed=args.seed)
    head_config = FlowHeadConfig(action_dim=data.num_params, num_steps=TEACHER_STEPS)
    threads = th.get_num_threads()
    th.set_num_threads(1)  # the experts are small MLPs: one thread is several times faster than two busy ones
    teacher = train_flow_head(extractor, train, head_config, fit, out=ckpt)
    reflow_fit = FitConfig(steps=args.reflow_steps, lr=args.reflow_lr, seed=args.seed,
                           couplings_per_feature=args.couplings_per_feature)  # fmt: skip
    student = distill(teacher, train, work / "student", reflow_fit, teacher_path=ckpt)
    th.set_num_threads(threads)

    held_features = teacher.features(held.images)
    x0, reference = couplings(teacher.head, held_features, TEACHER_STEPS, args.seed + 1, args.draws)
    features = held_features.repeat_interleave(args.draws, dim=0)
    fresh = th.randn(x0.shape, generator=th.Generator().manual_seed(args.seed + 2))
    report: dict = {
        "held_out_pairs": len(held),
        "draws_per_state": args.draws,
        "teacher_full_steps": TEACHER_STEPS,
        "reflow_steps": args.reflow_steps,
        "reflow_lr": args.reflow_lr,
        "couplings_per_feature": args.couplings_per_feature,
        "training_couplings": len(train) * args.couplings_per_feature,
    }
    for steps in (1, 2, 4, TEACHER_STEPS):
        out = teacher.head.sample(features, x0, steps)
        report[f"teacher_{steps}step_distance"] = float((out - reference).norm(dim=1).mean())
        report[f"teacher_{steps}step_sliced_w1"] = sliced_w1(teacher.head.sample(features, fresh, steps), reference)
    report["student_1step_distance"] = float((student.head.sample(features, x0, 1) - reference).norm(dim=1).mean())
    report["student_1step_sliced_w1"] = sliced_w1(student.head.sample(features, fresh, 1), reference)
    report["teacher_straightness"] = straightness(teacher.head, features, x0)
    report["student_straightness"] = straightness(student.head, features, x0)
    report["distance_ratio"] = report["teacher_1step_distance"] / report["student_1step_distance"]  # Done when: >= 2
    labels = th.as_tensor(normalize(held.labels, extractor.param_mean, extractor.param_std), dtype=th.float32)
    report["data_sliced_w1_to_teacher"] = sliced_w1(labels, reference[:: args.draws])
    report["teacher_latency_ms"] = latency_ms(teacher.head, features[:1], TEACHER_STEPS)
    report["student_latency_ms"] = latency_ms(student.head, features[:1], 1)
    start = time.perf_counter()
    teacher.features(held.images[:8], batch_size=1)
    report["backbone_latency_ms"] = 1000 * (time.perf_counter() - start) / 8
    if args.plot is not None:
        spread = teacher.head.sample(features, x0).view(len(held), args.draws, -1).std(dim=1).sum(dim=1)
        state = held_features[int(spread.argmax())][None]
        heads = {f"teacher, {TEACHER_STEPS} steps": (teacher.head, TEACHER_STEPS), "teacher, 1 step": (teacher.head, 1),
                 "reflow student, 1 step": (student.head, 1)}  # fmt: skip
        plot_samples(heads, state, extractor.denormalize, args.plot)
        report["plot"] = str(args.plot)

    if args.barn_dir is not None:
        from envs.worlds import TEST_IDS

        worlds = list(TEST_IDS[:5] if args.quick else TEST_IDS)
        for key, spec, mode in (
            ("mse_head", ckpt, "sft"),
            ("teacher", ckpt, "flow"),
            ("student", work / "student", "flow"),
        ):
            policy = load_policy(f"{key}={spec}", params=DWA_PARAMS, mode=mode, use_velocity=False)
            row = summary(evaluate(policy, worlds, args.runs, barn_dir=args.barn_dir, progress=False))
            report[f"nav_metric_{key}"] = round(row["nav_metric"], 4)
            report[f"nav_metric_{key}_ci95"] = round(row["nav_metric_ci95"], 4)
            report[f"success_{key}"] = round(row["success_rate"], 3)
        report["nav_runs_per_world"] = args.runs
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in report.items()}))


if __name__ == "__main__":
    main()
