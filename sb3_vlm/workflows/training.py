"""Training runs on the embedded simulator from an rl-zoo3 file (``sb3-vlm train``): run directory, checkpoints,
resume, navigation metrics."""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch as th
import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import CallbackList
from stable_baselines3.common.type_aliases import TrainFrequencyUnit
from stable_baselines3.common.vec_env import VecMonitor

from envs import BarnNavSubprocVecEnv, BarnNavVecEnv
from envs.nav_env import resolve_world_ids
from sb3_vlm._constants import RUN_CONFIG
from sb3_vlm.callbacks import NavMetricsCallback, SafeCheckpointCallback
from sb3_vlm.callbacks.checkpoint import (
    CHECKPOINT_BEST,
    CHECKPOINT_LAST,
    MODEL_ZIP,
    POLICY_DIR,
    REPLAY_BUFFER,
    find_checkpoint,
    save_policy_folder,
)
from sb3_vlm.formats.buffer_npz import load_replay_buffer
from sb3_vlm.formats.ftrl_config import apply_ftrl_config, read_ftrl_config
from sb3_vlm.formats.sb3_zip import load_algorithm
from sb3_vlm.rewards.build import judge_reward
from sb3_vlm.td3.fast import FastTD3
from sb3_vlm.td3.policies import VLMTD3Policy
from sb3_vlm.td3.reward_norm import reward_normalization_kwargs
from sb3_vlm.td3.td3 import VLMTD3
from sb3_vlm.zoo import OBSERVATIONS, ZooConfig, default_conf, load_zoo_config

__all__ = [
    "EVAL_WORLDS",
    "TrainSettings",
    "build_model",
    "default_checkpoint_freq",
    "make_vec_env",
    "new_run_dir",
    "run_worlds",
    "train",
    "write_run_config",
]

EVALS_PER_RUN = 5
"""In-training evaluations of a run when ``eval_freq`` is not given."""
CHECKPOINTS_PER_RUN = 20
"""Checkpoints (replay buffer included) of a run when ``checkpoint_freq`` is not given, >= 1,000 steps apart."""
EVAL_WORLDS = ("val", "test")
"""World sets the in-training evaluations may use (``"test"``: FTRL's test phases, for parity runs)."""
START_MODEL_ZIP = "start_model.zip"
"""The model as built, before its first update (fresh runs only): the closing check's start figure."""
FTRL_CONFIG_COPY = "config.yaml"
"""The merged ``--ftrl-config`` file, copied into the run directory as FTRL does."""


@dataclass
class TrainSettings:
    """
    One training run (the ``sb3-vlm train`` options; saved as ``run_config.json`` in the run directory).

    :param policy: Default zoo file: ``"vlm"`` or ``"applr"``.
    :param conf_file: rl-zoo3 YAML file (overrides ``policy``).
    :param env: Env id inside the zoo file (None: its only entry).
    :param timesteps: Override of ``n_timesteps``.
    :param n_envs: Override of ``n_envs``.
    :param barn_dir: Real BARN worlds directory, or None (generated worlds).
    :param worlds: A split name (``"train"``, ``"fit"``, ``"val"``, ``"test"``, ``"all"``), world ids, or None:
        ``"fit"`` (the training worlds less the validation worlds) when the run evaluates on ``"val"``, else
        ``"train"``.
    :param vlm: Local Qwen2.5-VL or FTRL checkpoint directory as the VLM policy's backbone.
    :param base_model: Base model of a checkpoint given with ``vlm``.
    :param seed: Seed of the model and the envs; None: the FTRL file's ``env_config.seed``, else 0.
    :param log_dir: Runs are written under this directory.
    :param resume: Run directory to resume from its last checkpoint (its saved settings are used).
    :param checkpoint_freq: Env steps between checkpoints (each writes the replay buffer); None: one per 5 % of the
        budget, at least 1,000 steps apart.
    :param save_replay_buffer: Put the replay buffer into the checkpoints.
    :param eval_freq: Env steps between in-training evaluations (0: none; None: 5 per run, every
        ``n_timesteps // 5`` steps). Each logs FTRL's ``Test_*`` keys, prints its summary and, on a better nav
        metric, writes ``policy_step_<k>/`` and ``best_model/`` into the run directory.
    :param eval_episodes: Episodes per evaluation: one on each of this many worlds spread over ``eval_worlds``.
    :param eval_worlds: Worlds of the in-training evaluations, and so of ``best_model/``: ``"val"`` (the 50
        validation worlds carved from the training worlds, ``envs.worlds.VAL_IDS``) or ``"test"`` (FTRL's test
        phases on the test worlds, for parity runs; then the test worlds no longer give an unbiased final report).
    :param env_workers: Simulator processes (``BarnNavSubprocVecEnv`` if > 1).
    :param torch_threads: Torch CPU threads; 0: half the CPU cores (at least one), leaving the rest to the simulator
        (two threads on a 2-core machine that also steps the simulator are several times slower than one).
    :param verbose: SB3 verbosity.
    :param no_progress_bar: Hide the progress bar.
    :param final_eval: Held-out test worlds (1 run each) on which the trained policy and default DWA are compared at
        the end, printed as one line (0: skip).
    :param ftrl_config: FTRL RL YAML (``configs/ftrl_vlm_dwa.yaml``) whose keys override the zoo file's (see
        :mod:`sb3_vlm.formats.ftrl_config`); keys without a counterpart are listed in a warning.
    :param ftrl_base: Base YAML the FTRL file is deep-merged over (FTRL: ``buffer/<policy>/config.yaml``).
    :param hyperparams: Overrides of the zoo entry's keys, as rl-zoo3's ``--hyperparams`` (``policy_kwargs`` and
        ``env_kwargs`` merged key by key), applied before the FTRL file and the options above.
    :param judge: VLM judge reward settings (``{"judge": VLMJudge kwargs, "reward": VecVLMJudgeReward kwargs}``,
        from the ``--judge-*`` options, see :func:`sb3_vlm.rewards.build.judge_reward`), or None.
    """

    policy: str = "vlm"
    conf_file: Path | None = None
    env: str | None = None
    timesteps: int | None = None
    n_envs: int | None = None
    barn_dir: Path | None = None
    worlds: str | list[int] | None = None
    vlm: str | None = None
    base_model: str | None = None
    seed: int | None = None
    log_dir: Path = Path("runs")
    resume: Path | None = None
    checkpoint_freq: int | None = None
    save_replay_buffer: bool = True
    eval_freq: int | None = None
    eval_episodes: int = 10
    eval_worlds: str = "val"
    env_workers: int = 1
    torch_threads: int = 0
    verbose: int = 0
    no_progress_bar: bool = False
    final_eval: int = 10
    judge: dict[str, Any] | None = None
    ftrl_config: Path | None = None
    ftrl_base: Path | None = None
    hyperparams: dict[str, Any] | None = None

    def to_json(self) -> str:
        return json.dumps(
            {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()}, indent=2
        )

    @classmethod
    def from_run(cls, run_dir: Path) -> TrainSettings:
        """The settings saved in ``run_dir`` (to resume it)."""
        saved = json.loads((run_dir / RUN_CONFIG).read_text())
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in saved.items() if k in names}
        for key in ("conf_file", "barn_dir", "log_dir", "ftrl_config", "ftrl_base"):
            if values.get(key) is not None:
                values[key] = Path(values[key])
        return cls(**{**values, "resume": run_dir})


def make_vec_env(
    env_id: str, n_envs: int, seed: int | None = None, n_workers: int = 1, **env_kwargs: Any
) -> VecMonitor:
    """``n_envs`` copies of ``env_id`` in one batched simulator (or split over ``n_workers`` processes), behind
    SB3's ``VecMonitor``.

    :param env_kwargs: BarnNav arguments (``barn_dir``, ``worlds``, ``reward``, ``image_size``, ``velocity``...).
    :raises ValueError: for an id that is not a BarnNav id.
    """
    if env_id not in OBSERVATIONS:
        raise ValueError(f"env id must be one of {sorted(OBSERVATIONS)}, got {env_id!r}")
    if n_workers > 1:
        venv = BarnNavSubprocVecEnv(n_envs, n_workers=n_workers, observation=OBSERVATIONS[env_id], **env_kwargs)
    else:
        venv = BarnNavVecEnv(n_envs, observation=OBSERVATIONS[env_id], **env_kwargs)
    venv.seed(seed)
    return VecMonitor(venv, info_keywords=("status", "nav_metric", "time", "world"))


def default_checkpoint_freq(timesteps: int) -> int:
    """Env steps between the checkpoints of a ``timesteps`` run when ``--checkpoint-freq`` is not given."""
    return max(1_000, timesteps // CHECKPOINTS_PER_RUN)


def _is_vlm(policy: Any) -> bool:
    return policy == "VLMPolicy" or (isinstance(policy, type) and issubclass(policy, VLMTD3Policy))


def build_model(cfg: ZooConfig, env: Any, seed: int, tensorboard_log: str | None, verbose: int) -> BaseAlgorithm:
    """VLMTD3 for the VLM policy, :class:`~sb3_vlm.td3.fast.FastTD3` (SB3's TD3, faster update; its ``MlpPolicy``
    zips are plain SB3 TD3 zips) otherwise, with the zoo file's hyper-parameters (and, with its
    ``reward_normalization``, the replay buffer that normalises rewards, n-step returns kept)."""
    algo = VLMTD3 if _is_vlm(cfg.algo_kwargs["policy"]) else FastTD3
    kwargs = dict(cfg.algo_kwargs)
    if cfg.reward_normalization is not None:
        if "replay_buffer_class" in kwargs:
            raise ValueError("zoo config: reward_normalization chooses the replay buffer; remove replay_buffer_class")
        n_steps = kwargs.pop("n_steps", 1)  # the buffer computes the n-step returns
        gamma = kwargs.get("gamma", 0.99)
        kwargs.update(reward_normalization_kwargs(env.observation_space, n_steps, gamma, cfg.reward_normalization))
    return algo(
        env=env,
        action_noise=cfg.action_noise(env.action_space.shape[0]),
        seed=seed,
        tensorboard_log=tensorboard_log,
        verbose=verbose,
        **kwargs,
    )


def zoo_config(settings: TrainSettings) -> tuple[Path, ZooConfig, dict[str, Any]]:
    """The run's zoo file, its entry with the settings' overrides (``--n-envs``, then the FTRL file's keys, then
    budget and ``--vlm`` backbone) and the env keyword arguments (worlds included). Resolves ``settings.seed``
    (None: the FTRL file's ``env_config.seed``, else 0). The FTRL file's unsupported keys are listed in one warning."""
    conf_file = Path(settings.conf_file or default_conf(settings.policy))
    cfg = load_zoo_config(conf_file, settings.env, settings.hyperparams)
    if settings.n_envs is not None:
        cfg.n_envs = settings.n_envs
    if settings.ftrl_config is not None:
        if not _is_vlm(cfg.algo_kwargs["policy"]):
            raise ValueError(f"--ftrl-config needs a VLM policy, but {conf_file} uses {cfg.algo_kwargs['policy']}")
        report = apply_ftrl_config(read_ftrl_config(settings.ftrl_config, settings.ftrl_base), cfg)
        if settings.seed is None:
            settings.seed = report.seed
        if report.warning() is not None:
            warnings.warn(report.warning(), stacklevel=2)
    if settings.seed is None:
        settings.seed = 0
    if settings.timesteps is not None:
        cfg.n_timesteps = settings.timesteps
    if settings.vlm is not None:
        if not _is_vlm(cfg.algo_kwargs["policy"]):
            raise ValueError(f"--vlm needs a VLM policy, but {conf_file} uses {cfg.algo_kwargs['policy']}")
        cfg.algo_kwargs["policy_kwargs"] = {**cfg.algo_kwargs.get("policy_kwargs", {}), "backbone": settings.vlm}
        if settings.base_model:
            cfg.algo_kwargs["policy_kwargs"]["base_model"] = settings.base_model
    return conf_file, cfg, {**cfg.env_kwargs, "barn_dir": settings.barn_dir, "worlds": settings.worlds}


def run_worlds(settings: TrainSettings, eval_freq: int) -> tuple[str | list[int], list[int]]:
    """The worlds a run fits on (``settings.worlds``; by default the training worlds, less the validation worlds
    when it evaluates on them) and those of its in-training evaluations: ``eval_episodes`` worlds spread over
    ``eval_worlds`` (none when ``eval_freq`` is 0).

    :raises ValueError: for an ``eval_worlds`` that is not ``"val"`` or ``"test"``.
    """
    if eval_freq <= 0:
        return ("train" if settings.worlds is None else settings.worlds), []
    if settings.eval_worlds not in EVAL_WORLDS:
        raise ValueError(f"eval_worlds must be one of {EVAL_WORLDS}, got {settings.eval_worlds!r}")
    fit = ("fit" if settings.eval_worlds == "val" else "train") if settings.worlds is None else settings.worlds
    ids = resolve_world_ids(settings.eval_worlds, settings.barn_dir)
    n = min(settings.eval_episodes, len(ids))
    return fit, [ids[i * len(ids) // n] for i in range(n)]


def train(settings: TrainSettings) -> Path:
    """Train; returns the run directory (``model.zip``, ``checkpoints/``, TensorBoard logs, ``run_config.json``)."""
    if settings.resume is not None:
        settings = TrainSettings.from_run(settings.resume)
    th.set_num_threads(settings.torch_threads or max(1, (os.cpu_count() or 2) // 2))
    conf_file, cfg, env_kwargs = zoo_config(settings)
    run_dir = settings.resume or new_run_dir(settings, cfg, Path(conf_file))
    eval_freq = max(cfg.n_timesteps // EVALS_PER_RUN, 1) if settings.eval_freq is None else settings.eval_freq
    env_kwargs["worlds"], eval_ids = run_worlds(settings, eval_freq)
    env = make_vec_env(cfg.env_id, cfg.n_envs, seed=settings.seed, n_workers=settings.env_workers, **env_kwargs)
    env, judge_callbacks = judge_reward(env, settings.judge)  # unchanged without a judge
    last = find_checkpoint(run_dir / "checkpoints" / CHECKPOINT_LAST) if settings.resume is not None else None
    model = _load_or_build(cfg, env, settings, run_dir, last)
    if last is not None:
        print(f"resumed from {last} at {model.num_timesteps} steps")
    eval_env = None
    if eval_ids:
        eval_kwargs = {**env_kwargs, "worlds": settings.eval_worlds}
        eval_env = make_vec_env(cfg.env_id, len(eval_ids), seed=10_000 + settings.seed, **eval_kwargs)
    if settings.resume is None:  # only now: bad worlds or a bad model leave no run directory behind
        write_run_config(run_dir, settings, Path(conf_file))
        model.save(run_dir / START_MODEL_ZIP)  # the policy before any update: the closing check's "start" figure
    nav_metrics = NavMetricsCallback(
        eval_env,
        eval_freq,
        eval_options=[{"world_id": w} for w in eval_ids] or None,
        best_path=run_dir / "checkpoints" / CHECKPOINT_BEST,
        policy_dir=run_dir,
        summary=True,
    )
    checkpoints = SafeCheckpointCallback(
        run_dir / "checkpoints",
        save_freq=settings.checkpoint_freq or default_checkpoint_freq(cfg.n_timesteps),
        save_replay_buffer=settings.save_replay_buffer,
    )
    # the zoo file's callbacks: exploration-noise schedule, actor-saturation monitor
    callbacks = CallbackList([nav_metrics, checkpoints, *judge_callbacks, *cfg.callbacks()])
    model.learn(
        _steps_to_run(model, cfg.n_timesteps),
        callback=callbacks,
        progress_bar=not settings.no_progress_bar,
        reset_num_timesteps=settings.resume is None,
        tb_log_name="td3",
    )
    _finish(model, run_dir, env, eval_env)
    if settings.final_eval > 0:
        print(held_out_check(run_dir, settings.barn_dir, settings.final_eval, settings.seed))
    return run_dir


def new_run_dir(settings: TrainSettings, cfg: ZooConfig, conf_file: Path) -> Path:
    """``<log_dir>/<env id>__<zoo file>__<seed>__<date-time>`` (not created)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return settings.log_dir / f"{cfg.env_id}__{conf_file.stem}__{settings.seed}__{stamp}"


def _load_or_build(
    cfg: ZooConfig, env: Any, settings: TrainSettings, run_dir: Path, last: Path | None
) -> BaseAlgorithm:
    """The model of checkpoint ``last`` (with its replay buffer, when saved), or a new one of ``cfg``; TensorBoard
    logs go to ``run_dir / "tb"``."""
    if last is None:
        return build_model(cfg, env, settings.seed, str(run_dir / "tb"), settings.verbose)
    model = load_algorithm(last / MODEL_ZIP, device="auto", env=env, tensorboard_log=str(run_dir / "tb"))
    if (last / REPLAY_BUFFER).exists():
        load_replay_buffer(model.replay_buffer, last / REPLAY_BUFFER)
    return model


def write_run_config(
    run_dir: Path, settings: TrainSettings, conf_file: Path, extra: dict[str, Any] | None = None
) -> None:
    """Create ``run_dir`` with ``run_config.json`` (the settings, their zoo file resolved, and ``extra`` keys) and,
    as FTRL keeps in its logging directory, a copy of the merged ``--ftrl-config`` file."""
    run_dir.mkdir(parents=True, exist_ok=True)
    saved = json.loads(dataclasses.replace(settings, conf_file=conf_file).to_json())
    (run_dir / RUN_CONFIG).write_text(json.dumps({**saved, **(extra or {})}, indent=2))
    if settings.ftrl_config is not None:
        merged = read_ftrl_config(settings.ftrl_config, settings.ftrl_base)
        (run_dir / FTRL_CONFIG_COPY).write_text(yaml.safe_dump(merged, sort_keys=False))


def _finish(model: BaseAlgorithm, run_dir: Path, env: Any, eval_env: Any) -> None:
    """Save the trained model (``model.zip``, and ``policy/`` for a VLM policy), close the envs."""
    model.save(run_dir / "model.zip")
    if isinstance(model.policy, VLMTD3Policy):
        save_policy_folder(model, run_dir / POLICY_DIR)
    env.close()
    if eval_env is not None:
        eval_env.close()
    print(f"trained {model.num_timesteps} steps -> {run_dir}")


def _steps_to_run(model: BaseAlgorithm, n_timesteps: int) -> int:
    """The env steps ``learn`` takes to reach ``n_timesteps``: SB3 stops between rollouts of ``train_freq`` steps of
    every env, so the budget is rounded up to whole rollouts (the progress bar's total is then the steps run)."""
    train_freq = getattr(model, "train_freq", None)
    per_env = train_freq.frequency if train_freq is not None and train_freq.unit == TrainFrequencyUnit.STEP else 1
    rollout = model.n_envs * per_env
    return -(-max(n_timesteps - model.num_timesteps, 0) // rollout) * rollout


def held_out_check(run_dir: Path, barn_dir: Path | None, n_worlds: int, seed: int = 0) -> str:
    """One line: nav metric and success of a run's final policy, of the same policy before training (when the run
    saved it) and of default DWA on the first ``n_worlds`` test worlds (real with ``barn_dir``, else generated), one
    run each, the same seeds for all."""
    from envs.planners import DWA_PARAMS
    from envs.worlds import TEST_IDS
    from sb3_vlm.policies import load_policy
    from sb3_vlm.workflows.evaluation import evaluate, summary

    worlds = list(TEST_IDS[:n_worlds])
    specs = {"final": run_dir / MODEL_ZIP, "start": run_dir / START_MODEL_ZIP, "dwa": "dwa"}
    rows = {}
    for name, spec in specs.items():
        if name == "dwa" or Path(spec).is_file():
            policy = load_policy(str(spec), params=DWA_PARAMS)
            rows[name] = summary(evaluate(policy, worlds, 1, barn_dir, seed=10_000 + seed, progress=False))

    def figure(name: str) -> str:
        return f"{rows[name]['nav_metric']:.3f} (success {rows[name]['success_rate']:.0%})"

    kind = "real BARN" if barn_dir is not None else "generated"
    start = f"start {figure('start')} -> final " if "start" in rows else ""
    return (
        f"held-out check on {len(worlds)} {kind} test worlds (same seeds): this policy nav metric {start}"
        f"{figure('final')}, default DWA {figure('dwa')}"
    )
