"""``AsyncLearner``: collectors on Ray run episodes with versioned policy weights; the learner trains continuously and
drops chunks staler than ``max_policy_lag`` (docs/guide/ray.md "How the asynchronous learner works")."""

from __future__ import annotations

import functools
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import ray
from ray.exceptions import RayActorError
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.utils import configure_logger

from sb3_vlm._validation import check_int
from sb3_vlm.distributed.collectors import Chunk, Collector
from sb3_vlm.distributed.vec_env import _barn_nav_venv, _dummy_venv
from sb3_vlm.workflows.bridge import BufferDirectoryBridge

__all__ = ["DEFAULT_COLLECTOR_OPTIONS", "AsyncLearner"]

DEFAULT_COLLECTOR_OPTIONS: dict[str, Any] = {
    "num_cpus": 1,
    "num_gpus": 0,
    "max_restarts": 10,  # Ray restarts a dead collector; its unfinished chunk is never returned
    "max_task_retries": 0,  # ... and never re-run (a re-run would add its transitions twice)
    "scheduling_strategy": "SPREAD",
}
"""Ray actor options of a collector unless ``collector_options`` overrides them."""


def _index(obs: Any, t: int) -> Any:
    return {k: v[t] for k, v in obs.items()} if isinstance(obs, dict) else obs[t]


class AsyncLearner:
    """
    Asynchronous collection for an off-policy SB3 model (``VLMTD3``, stock ``TD3``): collectors act, the learner
    trains.

    :param model: The model to train; its env is used only for the spaces and ``n_envs`` (each collector runs
        ``model.n_envs`` envs, the replay buffer's width). Its ``learning_starts``, ``batch_size``,
        ``gradient_steps``, ``seed`` and ``verbose`` apply.
    :param n_collectors: Collector actors.
    :param env_fns: Instead of BarnNav: Gymnasium env factories, ``n_collectors * model.n_envs`` of them.
    :param steps_per_chunk: Vectorised steps per chunk (``steps_per_chunk * model.n_envs`` transitions).
    :param gradient_steps_per_chunk: Gradient steps after each chunk; default ``steps_per_chunk *
        model.gradient_steps`` (SB3's ratio with ``train_freq=1``).
    :param sync_every: Gradient steps between weight publications.
    :param max_policy_lag: Chunks collected with weights more than this many versions old are dropped.
    :param action_noise: Std of the Gaussian exploration noise on the scaled action.
    :param collector_options: Ray actor options of every collector, merged over
        :data:`DEFAULT_COLLECTOR_OPTIONS` and passed to ``ray.remote(Collector).options(...)`` (``num_cpus``,
        ``num_gpus`` (>0 runs the collectors' policies on CUDA), ``max_restarts``, ``resources``, ``runtime_env``,
        ``scheduling_strategy``, ...).
    :param restart_timeout: Seconds to wait for a dead collector to come back before raising.
    :param bridge: Also train on the trajectory files external collectors write into a buffer directory, and
        publish policies for them (:class:`BufferDirectoryBridge`); with a bridge ``n_collectors`` may be 0.
    :param poll_interval: Seconds between polls of the bridge's directory.
    :param env_kwargs: ``BarnNavVecEnv`` arguments.
    """

    def __init__(
        self,
        model: OffPolicyAlgorithm,
        n_collectors: int = 2,
        *,
        env_fns: Sequence[Callable[[], gym.Env]] | None = None,
        steps_per_chunk: int = 8,
        gradient_steps_per_chunk: int | None = None,
        sync_every: int = 8,
        max_policy_lag: int = 4,
        action_noise: float = 0.1,
        collector_options: Mapping[str, Any] | None = None,
        restart_timeout: float = 120.0,
        bridge: BufferDirectoryBridge | None = None,
        poll_interval: float = 5.0,
        **env_kwargs: Any,
    ) -> None:
        if not isinstance(model, OffPolicyAlgorithm):
            raise TypeError(f"AsyncLearner needs an off-policy SB3 model (TD3, VLMTD3), got {type(model).__name__}")
        check_int(n_collectors, "n_collectors", 0 if bridge else 1, owner="AsyncLearner", note="0 only with a bridge")
        k = model.n_envs
        if env_fns is not None and (env_kwargs or len(env_fns) != n_collectors * k):
            raise ValueError(
                f"AsyncLearner: env_fns must hold n_collectors * model.n_envs = {n_collectors * k} factories and "
                f"come without BarnNav arguments, got {len(env_fns)} and {sorted(env_kwargs)}"
            )
        if not ray.is_initialized():
            ray.init()
        self.model, self.restart_timeout = model, float(restart_timeout)
        self.bridge, self.poll_interval = bridge, float(poll_interval)
        self.steps_per_chunk, self.sync_every, self.max_policy_lag = steps_per_chunk, sync_every, max_policy_lag
        self.gradient_steps_per_chunk = gradient_steps_per_chunk or steps_per_chunk * max(1, model.gradient_steps)
        self.collectors = self._start_collectors(n_collectors, env_fns, env_kwargs, action_noise, collector_options)
        self.version = 0
        self.sent = [-1] * n_collectors
        """Weights version last handed to each collector."""
        self.collector_restarts = 0
        self.dropped_chunks = 0
        self.chunks_per_collector = [0] * n_collectors
        self.transitions_added = 0
        self.lags: list[int] = []

    def _start_collectors(
        self,
        n_collectors: int,
        env_fns: Sequence[Callable[[], gym.Env]] | None,
        env_kwargs: dict[str, Any],
        action_noise: float,
        collector_options: Mapping[str, Any] | None,
    ) -> list[Any]:
        """One Ray :class:`Collector` actor per collector, each with ``model.n_envs`` envs and the model's policy
        class (its seed offset by collector)."""
        model, k = self.model, self.model.n_envs
        policy_kwargs = model.policy._get_constructor_parameters()  # BasePolicy.load's recipe
        options = {**DEFAULT_COLLECTOR_OPTIONS, **(collector_options or {})}
        device = "cuda" if options.get("num_gpus") else "cpu"
        actor_class = ray.remote(Collector).options(**options)
        seed = model.seed if model.seed is not None else int(np.random.randint(2**31))
        collectors = []
        for c in range(n_collectors):
            if env_fns is not None:
                make = functools.partial(_dummy_venv, list(env_fns[c * k : (c + 1) * k]))
            else:
                make = functools.partial(_barn_nav_venv, k, env_kwargs)
            collectors.append(
                actor_class.remote(
                    c, make, type(model.policy), policy_kwargs, action_noise, seed + 1000 * (c + 1), device
                )
            )
        return collectors

    def _publish(self) -> None:
        self.version += 1
        self._weights = ray.put({k: v.detach().cpu() for k, v in self.model.policy.state_dict().items()})
        if self.bridge is not None:
            self.bridge.publish(self.model, self.version)

    def _submit(self, c: int) -> ray.ObjectRef:
        """Ask collector ``c`` for a chunk, with the weights if it has an older version."""
        weights = self._weights if self.sent[c] < self.version else None
        self.sent[c] = self.version
        random = self.model.num_timesteps < self.model.learning_starts
        return self.collectors[c].collect.remote(weights, self.version, self.steps_per_chunk, random)

    def _add(self, chunk: Chunk) -> None:
        """Add a chunk to the replay buffer, step by step, as SB3's ``_store_transition`` does."""
        buffer, last = self.model.replay_buffer, len(chunk.rewards) - 1
        for t in range(last + 1):
            # The chunk's last row is marked truncated where its episode goes on: the next rows of the buffer belong
            # to another chunk, so n-step returns (NStepReplayBuffer) must stop there; 1-step targets are unchanged
            # (SB3 discounts with dones * (1 - timeouts) and those rows are not done).
            truncated = chunk.timeouts[t] | ((t == last) & ~chunk.dones[t])
            infos = [{"TimeLimit.truncated": bool(x)} for x in truncated]
            buffer.add(
                _index(chunk.observations, t),
                _index(chunk.next_observations, t),
                chunk.actions[t],
                chunk.rewards[t],
                chunk.dones[t],
                infos,
            )
        self.transitions_added += chunk.n_transitions

    def _train(self, n_new: int, total_timesteps: int) -> None:
        """Train after ``n_new`` transitions arrived (``gradient_steps_per_chunk`` per chunk's worth of them)."""
        model = self.model
        if model.num_timesteps < model.learning_starts:
            return
        gradient_steps = max(1, round(n_new * self.gradient_steps_per_chunk / (self.steps_per_chunk * model.n_envs)))
        model._update_current_progress_remaining(model.num_timesteps, total_timesteps)
        model.train(gradient_steps=gradient_steps, batch_size=model.batch_size)
        self._since_publish += gradient_steps
        if self._since_publish >= self.sync_every:
            self._publish()
            self._since_publish = 0

    def _poll_bridge(self, total_timesteps: int) -> None:
        added = self.bridge.poll(self.model)
        if added:
            self._train(added, total_timesteps)

    def learn(self, total_timesteps: int, log_interval: int = 4) -> OffPolicyAlgorithm:
        """
        Collect and train until ``total_timesteps`` transitions have been added to the replay buffer (from the
        collectors and the bridge's buffer directory).

        :param total_timesteps: Transitions to collect (the model's ``num_timesteps`` counts them).
        :param log_interval: Dump the logger every this many chunks (or bridge polls that added data).
        :return: The model.
        """
        model = self.model
        if not getattr(model, "_custom_logger", False):
            model.set_logger(configure_logger(model.verbose, model.tensorboard_log, "AsyncLearner"))
        self._weights = ray.put({k: v.detach().cpu() for k, v in model.policy.state_dict().items()})
        self._since_publish = 0
        self._returns: deque[float] = deque(maxlen=100)
        self._pending = {self._submit(c): c for c in range(len(self.collectors))}
        self._waiting: dict[ray.ObjectRef, tuple[int, float]] = {}  # pings to restarting collectors: (c, deadline)
        events, last_poll = 0, -np.inf
        self._start = (time.perf_counter(), model.num_timesteps)
        try:
            while model.num_timesteps < total_timesteps:
                if self.bridge is not None and time.monotonic() - last_poll >= self.poll_interval:
                    last_poll, before = time.monotonic(), model.num_timesteps
                    self._poll_bridge(total_timesteps)
                    events += model.num_timesteps > before
                    if model.num_timesteps >= total_timesteps:
                        break
                if not self._pending and not self._waiting:  # bridge only: nothing to wait for but the next poll
                    time.sleep(max(0.0, self.poll_interval - (time.monotonic() - last_poll)))
                    continue
                timeout = None if self.bridge is None else self.poll_interval
                ready, _ = ray.wait([*self._pending, *self._waiting], num_returns=1, timeout=timeout)
                if not ready:
                    continue
                if ready[0] in self._waiting:  # a restarting collector: submit again once it answers
                    self._on_ping(ready[0])
                elif self._on_chunk(ready[0], total_timesteps):
                    events += 1
                    if events % log_interval == 0 and model.num_timesteps < total_timesteps:
                        self._log(self._returns, self._fps())
        finally:
            for ref in self._pending:  # the collectors' unfinished chunks are not wanted any more
                ray.cancel(ref)
        self._log(self._returns, self._fps())
        return model

    def _fps(self) -> float:
        """Transitions per second since :meth:`learn` started."""
        started, steps = self._start
        return (self.model.num_timesteps - steps) / (time.perf_counter() - started)

    def _on_ping(self, ref: ray.ObjectRef) -> None:
        """A restarting collector answered a ping (or failed again): ask it for a chunk, or ping it again until its
        deadline."""
        c, deadline = self._waiting.pop(ref)
        try:
            ray.get(ref)
            self._pending[self._submit(c)] = c
        except RayActorError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"AsyncLearner: collector {c} did not come back") from exc
            time.sleep(0.1)
            self._waiting[self.collectors[c].ping.remote()] = c, deadline

    def _on_chunk(self, ref: ray.ObjectRef, total_timesteps: int) -> bool:
        """A collector returned a chunk: add it (unless its weights are too old) and train, then ask for the next
        one. False if the collector died instead (Ray restarts it; it is pinged until it is back)."""
        model = self.model
        c = self._pending.pop(ref)
        try:
            chunk: Chunk = ray.get(ref)
        except RayActorError:  # died mid-chunk: the chunk was never returned
            self.collector_restarts += 1
            self.sent[c] = -1  # the restarted collector has no weights
            self._waiting[self.collectors[c].ping.remote()] = c, time.monotonic() + self.restart_timeout
            return False
        lag = self.version - chunk.version
        if lag > self.max_policy_lag:
            self.dropped_chunks += 1
        else:
            self._add(chunk)
            model.num_timesteps += chunk.n_transitions
            self.chunks_per_collector[c] += 1
            self.lags.append(lag)
            self._returns.extend(chunk.episode_returns)
            self._train(chunk.n_transitions, total_timesteps)
        if model.num_timesteps < total_timesteps:
            self._pending[self._submit(c)] = c
        return True

    def _log(self, returns: deque[float], fps: float) -> None:
        logger, recent = self.model.logger, self.lags[-100:]
        logger.record("distributed/weights_version", self.version)
        logger.record("distributed/policy_lag_mean", float(np.mean(recent)) if recent else 0.0)
        logger.record("distributed/policy_lag_max", max(recent, default=0))
        logger.record("distributed/dropped_chunks", self.dropped_chunks)
        logger.record("distributed/collector_restarts", self.collector_restarts)
        logger.record("distributed/chunks", sum(self.chunks_per_collector))
        if self.bridge is not None:
            logger.record("distributed/bridge_transitions", self.bridge.transitions)
            logger.record("distributed/bridge_skipped_files", len(self.bridge.skipped_last_poll))
        if returns:
            logger.record("rollout/ep_rew_mean", float(np.mean(returns)))
        logger.record("time/fps", int(fps))
        logger.record("time/total_timesteps", self.model.num_timesteps, exclude="tensorboard")
        logger.dump(step=self.model.num_timesteps)

    def collector_versions(self) -> list[tuple[int, int]]:
        """``(pid, loaded weights version)`` of each collector."""
        return ray.get([collector.ping.remote() for collector in self.collectors])

    def close(self) -> None:
        """End the collector actors."""
        for collector in self.collectors:
            ray.kill(collector, no_restart=True)
