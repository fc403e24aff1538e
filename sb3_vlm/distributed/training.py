"""``sb3-vlm train --ray-address ADDRESS --collectors N``: the zoo-file training run with asynchronous Ray collectors.

The model, its hyper-parameters and the run directory are those of :func:`sb3_vlm.workflows.training.train`; the
experience comes from ``N`` :class:`~sb3_vlm.distributed.collectors.Collector` actors (each runs ``n_envs``
BarnNav episodes with its own copy of the policy, weights broadcast by version) and the learner trains as chunks
arrive (:class:`~sb3_vlm.distributed.learner.AsyncLearner`). Not (yet) in this mode: ``--resume``, periodic
checkpoints and evaluations, the judge reward and the zoo file's callbacks; the final model is saved as usual.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import ray

from sb3_vlm._constants import RUN_CONFIG
from sb3_vlm.distributed.learner import AsyncLearner
from sb3_vlm.td3.policies import VLMTD3Policy
from sb3_vlm.workflows.training import TrainSettings, build_model, make_vec_env, zoo_config
from sb3_vlm.zoo import OBSERVATIONS

__all__ = ["train_async"]

_UNSUPPORTED = {"resume": (None,), "judge": (None,), "eval_freq": (None, 0)}
"""Settings this mode does not implement, with the values that mean "off" (``eval_freq`` None: the default test
evaluations of ``sb3-vlm train``, which this mode skips)."""


def train_async(settings: TrainSettings, address: str | None, collectors: int, steps_per_chunk: int = 8) -> Path:
    """
    Train with asynchronous Ray collectors; returns the run directory (``model.zip``, ``policy/``, TensorBoard
    logs, ``run_config.json`` with the Ray options under ``"ray"``).

    :param settings: The run (see :class:`~sb3_vlm.workflows.training.TrainSettings`); ``n_envs`` is the number
        of episodes per collector.
    :param address: Ray cluster to join (``"auto"``, ``"HOST:PORT"``) if Ray is not initialised; None starts a
        local instance.
    :param collectors: Collector actors.
    :param steps_per_chunk: Vectorised steps per chunk a collector returns.
    :raises ValueError: for options this mode does not implement.
    """
    for name, off in _UNSUPPORTED.items():
        if getattr(settings, name) not in off:
            raise ValueError(f"sb3-vlm train --ray-address: {name!r} is not supported with Ray collectors yet")
    if not ray.is_initialized():
        ray.init(address=address)
    conf_file, cfg, env_kwargs = zoo_config(settings)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = settings.log_dir / f"{cfg.env_id}__{Path(conf_file).stem}__{settings.seed}__{stamp}__ray"
    run_dir.mkdir(parents=True, exist_ok=True)
    saved = json.loads(dataclasses.replace(settings, conf_file=Path(conf_file)).to_json())
    saved["ray"] = {"address": address, "collectors": collectors, "steps_per_chunk": steps_per_chunk}
    (run_dir / RUN_CONFIG).write_text(json.dumps(saved, indent=2))

    spaces_env = make_vec_env(cfg.env_id, cfg.n_envs, seed=settings.seed, **env_kwargs)  # never stepped
    model = build_model(cfg, spaces_env, settings.seed, str(run_dir / "tb"), settings.verbose)
    learner = AsyncLearner(
        model,
        collectors,
        steps_per_chunk=steps_per_chunk,
        action_noise=cfg.noise_std or 0.0,
        observation=OBSERVATIONS[cfg.env_id],
        **env_kwargs,
    )
    try:
        learner.learn(cfg.n_timesteps)
    finally:
        learner.close()
        spaces_env.close()
    model.save(run_dir / "model.zip")
    if isinstance(model.policy, VLMTD3Policy):
        model.policy.save_pretrained(run_dir / "policy")
    print(f"trained {model.num_timesteps} steps with {collectors} Ray collectors -> {run_dir}")
    return run_dir
