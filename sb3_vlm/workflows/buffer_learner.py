"""FTRL's training loop over external collectors (``sb3-vlm learn-from-buffer``, docs/compat/ftrl.md §4.6), without
Ray: poll trajectory files, train, publish, test, checkpoint, each cycle resumable; how and what it logs:
docs/guide/ftrl_workflow.md "Learning from a buffer of external collectors"."""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from sb3_vlm._validation import check_int
from sb3_vlm.callbacks import NavMetricsCallback
from sb3_vlm.callbacks.checkpoint import (
    CHECKPOINT_BEST,
    STATE_JSON,
    find_checkpoint,
    save_training_checkpoint,
)
from sb3_vlm.formats.ftrl_files import read_signal, write_signal
from sb3_vlm.td3.noise import noise_std
from sb3_vlm.td3.policies import VLMTD3Policy
from sb3_vlm.workflows.bridge import BufferDirectoryBridge

__all__ = ["BufferLearner", "Cycle"]

logger = logging.getLogger(__name__)


@dataclass
class Cycle:
    """One collect -> train -> publish (-> test) cycle.

    :param timesteps: ``model.num_timesteps`` at its end (transitions added so far).
    :param transitions: Transitions added in this cycle.
    :param updates: Gradient steps after them (``update_per_step`` per ``collect_per_step`` transitions).
    :param model_versions: Server ``model_version`` of each episode added (None: not recorded).
    :param reloaded: Servers that reloaded the published policy.
    :param reload_failed: Servers that did not (URL -> error).
    :param test: Test statistics of this cycle's test phase (``nav_metric``, ``success_rate``...), or None.
    """

    timesteps: int
    transitions: int
    updates: int = 0
    model_versions: list[int | None] = field(default_factory=list)
    reloaded: list[str] = field(default_factory=list)
    reload_failed: dict[str, str] = field(default_factory=dict)
    test: dict[str, float] | None = None


class BufferLearner:
    """
    FTRL's learner over a buffer directory (see the module docstring).

    :param model: ``VLMTD3`` (a ``VLMTD3Policy``: what the inference servers serve). Its env only gives the spaces;
        one env (``n_envs=1``) avoids padding the replay buffer.
    :param buffer_dir: The collectors' buffer directory (FTRL: ``buffer/<policy_name>``).
    :param servers: Inference server URLs to ``/reload`` after each publication.
    :param publish_dir: Policy directory the servers serve (default ``<buffer_dir>/policy``, FTRL's).
    :param run_dir: Directory of ``policy_step_<k>/``, ``best_model/`` and ``checkpoints/best``; None: not saved.
    :param collect_per_step: New transitions per cycle (FTRL: 512); default ``train_freq * n_envs`` of the model.
    :param update_per_step: Gradient steps per cycle (FTRL: 100); default the model's ``gradient_steps``.
    :param pre_collect: Transitions before the first update (FTRL: 512); default the model's ``learning_starts``.
    :param test_every: Cycles between test phases (0: only when the signal file asks for one).
    :param test_episodes: Test episodes a test phase waits for (FTRL: one per test world).
    :param test_timeout: Seconds a test phase waits for them (FTRL: 900).
    :param poll_interval: Seconds between polls of the directory when nothing arrived (FTRL: 5).
    :param min_age_s: Files modified more recently are left for the next poll (FTRL's collectors write in place;
        ours write atomically, 0 is safe with them).
    :param server_noise: Send the current exploration noise std with each ``/reload`` (servers in ``actor`` mode
        then explore with it); FTRL's servers ignore it, so by default it is only saved.
    :param params: Planner parameter table of the files' actions (default DWA).
    :param verbose: Print FTRL's summary after each test phase.
    :param checkpoint_dir: Atomic checkpoint after every cycle (see the module docstring), or None (files are
        deleted as they are added: a killed learner loses its buffer).
    """

    def __init__(
        self,
        model: OffPolicyAlgorithm,
        buffer_dir: str | os.PathLike,
        servers: Sequence[str] = (),
        *,
        publish_dir: str | os.PathLike | None = None,
        run_dir: str | os.PathLike | None = None,
        collect_per_step: int | None = None,
        update_per_step: int | None = None,
        pre_collect: int | None = None,
        test_every: int = 1,
        test_episodes: int = 1,
        test_timeout: float = 900.0,
        poll_interval: float = 5.0,
        min_age_s: float = 2.0,
        server_noise: bool = False,
        params: Any = None,
        verbose: int = 0,
        checkpoint_dir: str | os.PathLike | None = None,
    ) -> None:
        if not (isinstance(model, OffPolicyAlgorithm) and isinstance(model.policy, VLMTD3Policy)):
            raise TypeError(
                "BufferLearner publishes the policy for FTRL-style inference servers: it needs an off-policy model "
                f"with a VLMTD3Policy (VLMTD3), got {type(model).__name__} with {type(model.policy).__name__}"
            )
        self.model = model
        self.collect_per_step, self.update_per_step, self.pre_collect = _cycle_sizes(
            model, collect_per_step, update_per_step, pre_collect
        )
        self.test_every = check_int(test_every, "test_every", 0, owner="BufferLearner")
        self.test_episodes = check_int(test_episodes, "test_episodes", owner="BufferLearner")
        self.buffer_dir = Path(buffer_dir)
        self.bridge = BufferDirectoryBridge(
            self.buffer_dir,
            params=params,
            publish_dir=self.buffer_dir / "policy" if publish_dir is None else publish_dir,
            servers=servers,
            min_age_s=min_age_s,
            hold_consumed=checkpoint_dir is not None,
        )
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.test_timeout = float(test_timeout)
        self.poll_interval, self.server_noise, self.verbose = float(poll_interval), server_noise, verbose
        self.version = 0
        """Publications so far (the first, before any update, serves the starting policy)."""
        self.cycles: list[Cycle] = []
        self.reload_failures = self.test_timeouts = 0
        self.paused_s = 0.0
        best = None if self.run_dir is None else self.run_dir / "checkpoints" / CHECKPOINT_BEST
        self.metrics = NavMetricsCallback(best_path=best, policy_dir=self.run_dir, summary=verbose > 0)

    # ------------------------------------------------------------------ the steps of a cycle

    def _wait_while_paused(self) -> str | None:
        """Block while the signal file says ``pause`` (the time is counted in ``paused_s``); return the signal."""
        start = time.monotonic()
        while (signal := read_signal(self.buffer_dir)) == "pause":
            time.sleep(self.poll_interval)
        self.paused_s += time.monotonic() - start
        return signal

    def _obey_signal(self, cycle: Cycle) -> None:
        """Wait while paused (files already written are read by the next poll); run a test phase if someone wrote
        ``test``."""
        if self._wait_while_paused() == "test":
            cycle.test = self._test()

    def _collect(self, n: int, callback: BaseCallback, cycle: Cycle) -> bool:
        """Poll until ``n`` new transitions are in the replay buffer; False if a callback asked to stop."""
        callback.on_rollout_start()
        while cycle.transitions < n:
            self._obey_signal(cycle)
            added = self.bridge.poll(self.model, n - cycle.transitions)
            if not added:
                time.sleep(self.poll_interval)
                continue
            cycle.transitions += added
            episodes = self.bridge.last_episodes
            cycle.model_versions += [e["model_version"] for e in episodes]
            callback.update_locals({"infos": episodes, "dones": [True] * len(episodes)})
            if not callback.on_step():
                return False
        callback.on_rollout_end()
        return True

    def _publish(self, cycle: Cycle | None) -> None:
        """Replace the served policy and ``/reload`` every server (failures counted, not raised)."""
        noise = noise_std(getattr(self.model, "action_noise", None)) if self.server_noise else None
        result = self.bridge.publish(self.model, self.version + 1, noise_std=noise)
        self.version += 1
        self.reload_failures += len(result.failed)
        if cycle is not None:
            cycle.reloaded, cycle.reload_failed = list(result.reloaded), dict(result.failed)

    def _test(self) -> dict[str, float] | None:
        """One test phase (signal ``test`` until ``test_episodes`` test files arrived); its statistics or None."""
        self._wait_while_paused()
        self.bridge.poll_tests()  # late files of an earlier phase were played by an older policy: dropped
        write_signal(self.buffer_dir, "test")
        finals: list[dict[str, Any]] = []
        deadline = time.monotonic() + self.test_timeout
        while len(finals) < self.test_episodes:
            paused = self.paused_s
            signal = self._wait_while_paused()
            deadline += self.paused_s - paused  # time paused does not count
            if signal == "train" or time.monotonic() > deadline:  # ended by someone else, or timed out
                break
            finals += self.bridge.poll_tests()
            if len(finals) < self.test_episodes:
                time.sleep(self.poll_interval)
        if read_signal(self.buffer_dir) == "test":  # unless someone paused meanwhile
            write_signal(self.buffer_dir, "train")
        if not finals:
            self.test_timeouts += 1
            logger.warning("test phase: no test episode within %.0f s", self.test_timeout)
            return None
        return self.metrics.record_test(finals)

    def _log(self, cycle: Cycle) -> None:
        record = self.model.logger.record
        record("buffer/cycle", len(self.cycles))
        record("buffer/policy_version", self.version)
        versions = [v for v in cycle.model_versions if v is not None]
        if versions:
            record("buffer/collector_model_version", max(versions))
        record("buffer/reload_failures", self.reload_failures)
        record("buffer/skipped_files", len(self.bridge.skipped_last_poll))
        record("buffer/test_timeouts", self.test_timeouts)
        record("buffer/paused_s", self.paused_s)
        record("time/total_timesteps", self.model.num_timesteps, exclude="tensorboard")
        self.model.logger.dump(step=self.model.num_timesteps)

    def _checkpoint(self) -> None:
        """Write the checkpoint (model, replay buffer, episodes in it), then delete the files it now holds."""
        if self.checkpoint_dir is None:
            return
        save_training_checkpoint(
            self.model, self.checkpoint_dir, replay_buffer=True, version=self.version, consumed=self.bridge.consumed
        )
        self.bridge.release()

    def restore(self) -> Path | None:
        """Resume from ``checkpoint_dir``: the model's weights, replay buffer and step counter (loaded by the caller
        into ``model``, see :func:`learn_from_buffer`), then the episodes it holds; the ``.consumed`` files it holds
        are deleted, the others put back. Returns the checkpoint, or None if there is none (all files put back)."""
        last = None if self.checkpoint_dir is None else find_checkpoint(self.checkpoint_dir)
        state = json.loads((last / STATE_JSON).read_text()) if last is not None else {}
        self.version = state.get("version", 0)
        self.bridge.consumed = [list(e) for e in state.get("consumed", [])]
        deleted, restored = self.bridge.recover({(a, n) for a, n, _ in self.bridge.consumed})
        logger.info(
            "resumed at %d steps: %d held files deleted, %d read again", self.model.num_timesteps, deleted, restored
        )
        return last

    # ------------------------------------------------------------------ the loop

    def learn(
        self,
        total_timesteps: int,
        callback: BaseCallback | list[BaseCallback] | None = None,
        tb_log_name: str = "learn_from_buffer",
    ) -> OffPolicyAlgorithm:
        """
        Run cycles until ``total_timesteps`` transitions were added (FTRL's ``max_step``).

        :param total_timesteps: Transitions to train on.
        :param callback: SB3 callbacks (e.g. the zoo file's), run beside the FTRL metrics.
        :param tb_log_name: TensorBoard run name (under the model's ``tensorboard_log``).
        :return: The model.
        """
        model = self.model
        callbacks = [self.metrics, *(callback if isinstance(callback, list) else [callback] if callback else [])]
        resumed = model.num_timesteps  # SB3 adds the steps done to the budget when it does not reset them
        total_timesteps, cb = model._setup_learn(
            total_timesteps - resumed, CallbackList(callbacks), resumed == 0, tb_log_name
        )
        cb.on_training_start(locals(), globals())
        self._publish(None)  # the servers serve the learner's starting policy
        if read_signal(self.buffer_dir) != "pause":
            write_signal(self.buffer_dir, "train")
        while model.num_timesteps < total_timesteps:
            cycle = Cycle(timesteps=model.num_timesteps, transitions=0)
            first = not self.cycles
            wanted = (
                max(self.pre_collect - model.num_timesteps, self.collect_per_step) if first else self.collect_per_step
            )
            if not self._collect(min(wanted, total_timesteps - model.num_timesteps), cb, cycle):
                break
            if model.num_timesteps >= self.pre_collect and self.update_per_step > 0:
                # FTRL's ratio, also when a poll brought more than collect_per_step (a backlog of files)
                cycle.updates = max(1, round(self.update_per_step * cycle.transitions / self.collect_per_step))
                model._update_current_progress_remaining(model.num_timesteps, total_timesteps)
                model.train(gradient_steps=cycle.updates, batch_size=model.batch_size)
            self._publish(cycle)
            self._checkpoint()
            self.cycles.append(cycle)
            if self.test_every and len(self.cycles) % self.test_every == 0:
                cycle.test = self._test()
            cycle.timesteps = model.num_timesteps
            self._log(cycle)
        cb.on_training_end()
        return model


def _cycle_sizes(
    model: OffPolicyAlgorithm, collect_per_step: int | None, update_per_step: int | None, pre_collect: int | None
) -> tuple[int, int, int]:
    """``collect_per_step``, ``update_per_step`` and ``pre_collect``, by default the model's ``train_freq * n_envs``,
    ``gradient_steps`` and ``learning_starts``."""
    collect = collect_per_step or model.train_freq.frequency * model.n_envs
    update = model.gradient_steps if update_per_step is None else update_per_step
    pre = model.learning_starts if pre_collect is None else pre_collect
    return (
        check_int(collect, "collect_per_step", owner="BufferLearner"),
        check_int(update, "update_per_step", 0, owner="BufferLearner"),
        check_int(pre, "pre_collect", 0, owner="BufferLearner"),
    )


def __getattr__(name: str) -> Any:
    # learn_from_buffer lived here in sb3-vlm 0.1; its home is sb3_vlm.workflows.buffer_runs (which imports this
    # module, hence the late import).
    if name == "learn_from_buffer":
        warnings.warn(
            "sb3_vlm.workflows.buffer_learner.learn_from_buffer is deprecated and will be removed in the next "
            "release; import it from sb3_vlm.workflows.buffer_runs",
            DeprecationWarning,
            stacklevel=2,
        )
        from sb3_vlm.workflows.buffer_runs import learn_from_buffer

        return learn_from_buffer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
