"""``sb3-vlm eval``: a policy on chosen worlds, in the batched simulator -> per-world table.

A policy is given as ``[name=]spec`` where ``spec`` is one of:

* ``dwa`` (default parameters) or ``dwa:max_vel_x=2.0,inflation_radius=0.6`` (fixed parameters);
* a directory with APPLR's ``policy_actor`` (the published ros_jackal actor, loaded safely; time_step 1 s);
* an SB3 zip (``TD3`` on the laser or ``VLMTD3`` on the costmap image; the run's zoo settings are reused);
* a directory written by ``VLMTD3Policy.save_pretrained`` (``actor_head/``) or a supervised FTRL checkpoint
  (``regression_head/``: the SFT head's ``pred * std + mean``, as the FTRL server serves it).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.preprocessing import is_image_space
from tqdm import tqdm

from envs import BarnNavVecEnv
from envs.nav_env import resolve_world_ids
from envs.planners import DWA_PARAMS
from envs.render import DEFAULT_IMAGE_SIZE
from envs.wrappers import costmap_space
from sb3_vlm._constants import ACTOR_HEAD_DIR, HEAD_DIR
from sb3_vlm.applr import APPLR_ACTOR_FILE, applr_td3
from sb3_vlm.callbacks import run_episodes
from sb3_vlm.cli.envs_factory import OBSERVATIONS
from sb3_vlm.cli.train import RUN_CONFIG, parse_worlds
from sb3_vlm.extractor import VLMDPTExtractor
from sb3_vlm.formats.sb3_zip import load_algorithm
from sb3_vlm.policy import VLMTD3Policy
from sb3_vlm.zoo import load_zoo_config

Predict = Callable[[Any], np.ndarray]
APPLR_ENV = {"time_step": 1.0, "max_steps": 100}
"""APPLR chose parameters once per second for at most 100 steps (same 100 s budget as BARN)."""


@dataclass
class EvalPolicy:
    """Something that picks physical DWA parameters from BarnNav observations.

    :param name: Label in tables and plots.
    :param observation: ``"laser"`` or ``"costmap"``.
    :param predict: Batched observations -> physical parameters ``[N, 7]``.
    :param env_kwargs: BarnNav settings the policy was made for (``time_step``, ``image_size``, ...).
    """

    name: str
    observation: str
    predict: Predict
    env_kwargs: dict[str, Any] = field(default_factory=dict)


def _fixed(name: str, spec: str) -> EvalPolicy:
    params = DWA_PARAMS.default.copy()
    for item in filter(None, spec.partition(":")[2].split(",")):
        key, _, value = item.partition("=")
        params[DWA_PARAMS.index(key.strip())] = float(value)
    params = DWA_PARAMS.validate(params)
    return EvalPolicy(name, "laser", lambda obs: np.tile(params, (len(obs), 1)))


def _run_settings(zip_path: Path) -> tuple[str | None, dict[str, Any]]:
    """Env id and env kwargs of the training run a zip belongs to (``run_config.json`` above it), if any."""
    for parent in zip_path.resolve().parents[:4]:
        if (parent / RUN_CONFIG).is_file():
            saved = json.loads((parent / RUN_CONFIG).read_text())
            cfg = load_zoo_config(saved["conf_file"], saved.get("env"))
            return cfg.env_id, {k: v for k, v in cfg.env_kwargs.items() if k != "reward"}
    return None, {}


def _sb3_zip(name: str, path: Path) -> EvalPolicy:
    model = load_algorithm(path)
    env_id, env_kwargs = _run_settings(path)
    if env_id is not None:
        observation = OBSERVATIONS[env_id]
    else:
        observation = (
            "costmap"
            if is_image_space(model.observation_space) or isinstance(model.observation_space, spaces.Dict)
            else "laser"
        )
    if observation == "costmap" and isinstance(model.observation_space, spaces.Dict):
        env_kwargs.setdefault("velocity", True)
    return EvalPolicy(name, observation, lambda obs: model.predict(obs, deterministic=True)[0], env_kwargs)


def _image_space(image_size: tuple[int, int], velocity: bool) -> spaces.Space:
    """The channel-first space SB3 policies see after ``VecTransposeImage``."""
    space = costmap_space(image_size, velocity)
    image = space["image"] if velocity else space
    chw = spaces.Box(0, 255, shape=(3, *image_size), dtype=np.uint8)
    assert isinstance(image, spaces.Box)
    return spaces.Dict({"image": chw, "velocity": space["velocity"]}) if velocity else chw


def _to_tensor(obs: Any) -> Any:
    """HWC uint8 batch (or Dict) -> channel-first tensors, as SB3 feeds its policies."""
    if isinstance(obs, dict):
        return {"image": _to_tensor(obs["image"]), "velocity": th.as_tensor(obs["velocity"])}
    return th.as_tensor(np.ascontiguousarray(np.transpose(obs, (0, 3, 1, 2))))


def _pretrained(name: str, path: Path, image_size: tuple[int, int]) -> EvalPolicy:
    env_kwargs = {"image_size": image_size}
    if (path / ACTOR_HEAD_DIR).is_dir():
        action_space = spaces.Box(DWA_PARAMS.low, DWA_PARAMS.high, dtype=np.float32)
        policy = VLMTD3Policy.from_pretrained(path, _image_space(image_size, False), action_space)
        policy.set_training_mode(False)
        return EvalPolicy(name, "costmap", lambda obs: policy.predict(obs, deterministic=True)[0], env_kwargs)
    extractor = VLMDPTExtractor(_image_space(image_size, False), backbone=str(path))

    def predict(obs: np.ndarray) -> np.ndarray:
        with th.no_grad():
            params = extractor.predict_parameters(_to_tensor(obs)).numpy()[:, : len(DWA_PARAMS)]
        return np.clip(params, DWA_PARAMS.low, DWA_PARAMS.high)

    return EvalPolicy(name, "costmap", predict, env_kwargs)


def load_policy(spec: str, image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE) -> EvalPolicy:
    """Build an :class:`EvalPolicy` from ``[name=]spec`` (see the module docstring).

    :raises ValueError: for a spec that is none of the known kinds (naming it).
    """
    name, _, target = spec.partition("=") if "=" in spec.partition(":")[0] else ("", "", spec)
    path = Path(target)
    if target == "dwa" or target.startswith("dwa:"):
        return _fixed(name or target, target)
    if (path.is_dir() and (path / APPLR_ACTOR_FILE).is_file()) or path.name == APPLR_ACTOR_FILE:
        dummy = BarnNavVecEnv(1, worlds=[0])
        model = applr_td3(path, dummy, device="cpu")
        return EvalPolicy(name or "applr", "laser", lambda obs: model.predict(obs, deterministic=True)[0], APPLR_ENV)
    if path.is_file() and path.suffix == ".zip":
        return _sb3_zip(name or path.parent.name, path)
    if path.is_dir() and ((path / ACTOR_HEAD_DIR).is_dir() or (path / HEAD_DIR).is_dir()):
        return _pretrained(name or path.name, path, image_size)
    raise ValueError(
        f"policy {spec!r}: expected 'dwa', 'dwa:name=value,...', an APPLR directory (policy_actor), an SB3 .zip, "
        "or a policy/checkpoint directory (actor_head/ or regression_head/)"
    )


def evaluate(
    policy: EvalPolicy,
    worlds: Sequence[int],
    runs: int,
    barn_dir: str | Path | None = None,
    seed: int = 0,
    max_envs: int = 100,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """``runs`` episodes of ``policy`` on each world, all batched; the episode of (world, run) has the same seed
    for every policy, so policies meet the same noise.

    :return: One record per episode: ``policy``, ``world``, ``run``, ``status``, ``time``, ``nav_metric``,
        ``opt_time``, ``trajectory`` ``[T, 2]``.
    """
    jobs = [(w, r) for r in range(runs) for w in worlds]
    records: list[dict[str, Any]] = []
    with tqdm(total=len(jobs), desc=policy.name, disable=not progress, unit="ep") as bar:
        for start in range(0, len(jobs), max_envs):
            chunk = jobs[start : start + max_envs]
            venv = BarnNavVecEnv(
                len(chunk), observation=policy.observation, barn_dir=barn_dir, worlds=list(worlds), **policy.env_kwargs
            )
            # Episode j of the whole evaluation gets seed + j, whatever the chunking.
            finals = run_episodes(policy.predict, venv, seed + start, [{"world_id": w} for w, _ in chunk])
            for (w, r), info in zip(chunk, finals, strict=True):
                records.append(
                    {
                        "policy": policy.name,
                        "world": w,
                        "run": r,
                        "status": info["status"],
                        "time": info["time"],
                        "nav_metric": info["nav_metric"],
                        "opt_time": info["opt_time"],
                        "trajectory": info["trajectory"],
                    }
                )
            bar.update(len(chunk))
    return records


def summary(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Rates, mean time of successful runs, mean nav metric, each with a 95% normal interval half-width."""
    status = np.array([r["status"] for r in records])
    metric = np.array([r["nav_metric"] for r in records])
    times = np.array([r["time"] for r in records])[status == "success"]
    n = len(records)

    def ci(x: np.ndarray) -> float:
        return float(1.96 * x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")

    success = (status == "success").astype(float)
    return {
        "policy": records[0]["policy"],
        "episodes": n,
        "success_rate": float(success.mean()),
        "success_ci95": ci(success),
        "collision_rate": float(np.mean(status == "collision")),
        "timeout_rate": float(np.mean(status == "timeout")),
        "time": float(times.mean()) if len(times) else float("nan"),
        "time_ci95": ci(times),
        "nav_metric": float(metric.mean()),
        "nav_metric_ci95": ci(metric),
    }


def per_world(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (policy, world): runs, success rate, mean time of successes, mean nav metric."""
    rows = []
    for key in sorted({(r["policy"], r["world"]) for r in records}, key=lambda k: (k[1], k[0])):
        group = [r for r in records if (r["policy"], r["world"]) == key]
        ok = [r["time"] for r in group if r["status"] == "success"]
        rows.append(
            {
                "policy": key[0],
                "world": key[1],
                "runs": len(group),
                "success_rate": float(np.mean([r["status"] == "success" for r in group])),
                "time": float(np.mean(ok)) if ok else float("nan"),
                "nav_metric": float(np.mean([r["nav_metric"] for r in group])),
            }
        )
    return rows


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A Markdown table of ``rows`` (floats with 3 decimals)."""

    def cell(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--barn-dir", type=Path, help="real BARN worlds directory (default: generated worlds)")
    parser.add_argument("--worlds", default="test", help="'test' (default), 'train', 'all' or ids like 0,6,12")
    parser.add_argument("--runs", type=int, default=10, help="episodes per world (BARN: 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-envs", type=int, default=100, help="episodes simulated side by side")
    parser.add_argument("--image-size", type=int, nargs=2, default=DEFAULT_IMAGE_SIZE, metavar=("H", "W"))


def world_list(text: str, barn_dir: Path | None) -> list[int]:
    """World ids of ``--worlds`` (ids present in ``barn_dir`` when given)."""
    return list(resolve_world_ids(parse_worlds(text) or "test", barn_dir))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("policy", help="[name=]dwa | dwa:k=v,... | APPLR dir | model.zip | policy/checkpoint dir")
    add_common_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def run(args: argparse.Namespace) -> dict[str, Any]:
    policy = load_policy(args.policy, tuple(args.image_size))
    records = evaluate(
        policy,
        world_list(args.worlds, args.barn_dir),
        args.runs,
        args.barn_dir,
        args.seed,
        args.max_envs,
        progress=not args.json,
    )
    stats = summary(records)
    if args.json:
        print(json.dumps(stats))
    else:
        print(format_table(per_world(records), ["world", "runs", "success_rate", "time", "nav_metric"]))
        print(
            format_table(
                [stats],
                [
                    "policy",
                    "episodes",
                    "success_rate",
                    "collision_rate",
                    "timeout_rate",
                    "time",
                    "nav_metric",
                    "nav_metric_ci95",
                ],
            )
        )
    return stats
