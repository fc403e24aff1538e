"""Runs of ``sb3-vlm learn-from-buffer``: the run directory, resuming it, and the model a
:class:`~sb3_vlm.workflows.buffer_learner.BufferLearner` trains."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm

from envs.planners import param_table
from sb3_vlm._constants import RUN_CONFIG
from sb3_vlm.callbacks.checkpoint import (
    CHECKPOINT_LAST,
    MODEL_ZIP,
    POLICY_DIR,
    REPLAY_BUFFER,
    find_checkpoint,
    save_policy_folder,
)
from sb3_vlm.formats.buffer_npz import load_replay_buffer
from sb3_vlm.formats.sb3_zip import load_algorithm
from sb3_vlm.td3.policies import VLMTD3Policy
from sb3_vlm.workflows.buffer_learner import BufferLearner
from sb3_vlm.workflows.training import (
    TrainSettings,
    build_model,
    make_vec_env,
    new_run_dir,
    write_run_config,
    zoo_config,
)
from sb3_vlm.zoo import ZooConfig

__all__ = ["learn_from_buffer"]

RUN_KEY = "learn_from_buffer"
"""Key of ``run_config.json`` under which a run records its buffer directory, servers and learner options."""


def learn_from_buffer(
    settings: TrainSettings,
    buffer_dir: str | os.PathLike | None,
    servers: Sequence[str] = (),
    resume: str | os.PathLike | None = None,
    **learner_kwargs: Any,
) -> Path:
    """
    ``sb3-vlm learn-from-buffer``: the model of ``settings`` (zoo file, ``--ftrl-config``, ``--vlm``; one env, the
    files bring one transition at a time) trained by a :class:`BufferLearner` for the zoo file's ``n_timesteps``
    (FTRL's ``max_step``), checkpointed every cycle into ``<run>/checkpoints/last``. FTRL's ``collect_per_step`` /
    ``update_per_step`` / ``pre_collect`` come from the zoo entry (``train_freq``, ``gradient_steps``,
    ``learning_starts``) unless given in ``learner_kwargs``.

    :param resume: A run directory of this command to continue (killed or not): its saved settings, buffer directory,
        servers and options are used, ``settings`` and the others ignored.
    :return: The run directory: TensorBoard logs, ``run_config.json``, ``checkpoints/last``, ``policy_step_<k>/``,
        ``best_model/``, ``model.zip`` and ``policy/`` at the end.
    """
    if resume is not None:
        settings, buffer_dir, servers, learner_kwargs = _saved_run(Path(resume))
    elif buffer_dir is None:
        raise ValueError("learn-from-buffer needs --buffer (or --resume RUN_DIR)")
    settings.n_envs = 1
    if settings.torch_threads > 0:
        th.set_num_threads(settings.torch_threads)
    conf_file, cfg, env_kwargs = zoo_config(settings)
    spaces_env = make_vec_env(cfg.env_id, 1, seed=settings.seed, **env_kwargs)  # never stepped
    options = {"buffer": str(buffer_dir), "servers": list(servers), **learner_kwargs}
    run_dir = Path(resume) if resume is not None else _new_run(settings, conf_file, cfg, options)
    checkpoint_dir = run_dir / "checkpoints" / CHECKPOINT_LAST
    model = _model(settings, cfg, spaces_env, run_dir, checkpoint_dir if resume is not None else None)
    params = param_table(cfg.env_kwargs.get("planner", "dwa"))
    learner = BufferLearner(
        model, buffer_dir, servers, run_dir=run_dir, params=params, verbose=1, checkpoint_dir=checkpoint_dir,
        **learner_kwargs,
    )  # fmt: skip
    if resume is not None:
        learner.restore()
        print(f"resumed {run_dir} at {model.num_timesteps} transitions")
    try:
        learner.learn(cfg.n_timesteps, callback=cfg.callbacks())
    finally:
        spaces_env.close()
    _finish(learner, buffer_dir, run_dir)
    return run_dir


def _saved_run(run_dir: Path) -> tuple[TrainSettings, str, list[str], dict[str, Any]]:
    """The settings, buffer directory, servers and learner options a run of this command saved."""
    if not (run_dir / RUN_CONFIG).is_file():
        raise FileNotFoundError(f"--resume {run_dir}: no {RUN_CONFIG} (not a learn-from-buffer run directory)")
    saved = json.loads((run_dir / RUN_CONFIG).read_text())
    if RUN_KEY not in saved:
        raise ValueError(f"--resume {run_dir}: a run of `sb3-vlm train`, not of learn-from-buffer")
    options = dict(saved[RUN_KEY])
    buffer_dir, servers = options.pop("buffer"), options.pop("servers")
    learner_kwargs = {k: Path(v) if k == "publish_dir" and v is not None else v for k, v in options.items()}
    return TrainSettings.from_run(run_dir), buffer_dir, servers, learner_kwargs


def _new_run(settings: TrainSettings, conf_file: Path, cfg: ZooConfig, options: dict[str, Any]) -> Path:
    """A new run directory holding ``run_config.json`` (the settings, and ``options`` under :data:`RUN_KEY`) and the
    merged ``--ftrl-config`` file."""
    run_dir = new_run_dir(settings, cfg, conf_file)
    options = {k: str(v) if isinstance(v, Path) else v for k, v in options.items()}
    write_run_config(run_dir, settings, conf_file, {RUN_KEY: options})
    return run_dir


def _model(
    settings: TrainSettings, cfg: ZooConfig, env: Any, run_dir: Path, checkpoint_dir: Path | None
) -> BaseAlgorithm:
    """The model of the last checkpoint in ``checkpoint_dir`` (with its replay buffer), else a new one."""
    last = None if checkpoint_dir is None else find_checkpoint(checkpoint_dir)
    if last is None:
        return build_model(cfg, env, settings.seed, str(run_dir / "tb"), settings.verbose)
    model = load_algorithm(last / MODEL_ZIP, env=env, tensorboard_log=str(run_dir / "tb"))
    load_replay_buffer(model.replay_buffer, last / REPLAY_BUFFER)
    return model


def _finish(learner: BufferLearner, buffer_dir: str | os.PathLike, run_dir: Path) -> None:
    """Save the trained model (``model.zip``, and ``policy/`` for a VLM policy) and print what the run did."""
    model = learner.model
    model.save(run_dir / "model.zip")
    if isinstance(model.policy, VLMTD3Policy):
        save_policy_folder(model, run_dir / POLICY_DIR)
    tests = [c.test["nav_metric"] for c in learner.cycles if c.test]
    print(
        f"learned from {buffer_dir}: {learner.model.num_timesteps} transitions, "
        f"{sum(c.updates for c in learner.cycles)} updates, {len(learner.cycles)} cycles, "
        f"{learner.version} publications ({learner.reload_failures} failed reloads), {len(tests)} test phases "
        f"({learner.test_timeouts} without test episodes)"
        + (f", best test nav metric {max(tests):.3f}" if tests else "")
        + f" -> {run_dir}"
    )
