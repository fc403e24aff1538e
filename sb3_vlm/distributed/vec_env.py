"""``RayVecEnv``: an SB3 ``VecEnv`` whose environments live in Ray actors, restarted when they die; seeded like
``BarnNavSubprocVecEnv``, a dead actor's episodes reported truncated
(docs/guide/ray.md "Seeding and fault tolerance")."""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import ray
from ray.exceptions import ActorDiedError, GetTimeoutError, RayActorError
from stable_baselines3.common.vec_env import DummyVecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

from sb3_vlm._validation import check_int
from sb3_vlm.distributed.runner import EnvRunner, RunnerStep

__all__ = ["RayVecEnv"]


def _barn_nav_venv(n_envs: int, kwargs: dict[str, Any]) -> VecEnv:
    """A ``BarnNavVecEnv`` of ``n_envs`` (imported in the actor: ``sb3_vlm`` imports ``envs`` only where it runs)."""
    from envs import BarnNavVecEnv

    return BarnNavVecEnv(n_envs, **kwargs)


def _dummy_venv(env_fns: Sequence[Callable[[], gym.Env]]) -> VecEnv:
    return DummyVecEnv(list(env_fns))


class RayVecEnv(VecEnv):
    """
    ``n_envs`` environments in ``n_actors`` Ray actors, stepped in parallel, with actor restarts.

    Ray must be reachable: if it is not initialised yet, ``ray.init(address=address)`` is called (``None`` starts a
    local instance with every core; call ``ray.init`` yourself for other options). Every node needs ``sb3-vlm``
    installed in the same environment: actors import ``envs`` and ``sb3_vlm`` there.

    :param n_envs: Number of BarnNav environments (``BarnNavVecEnv`` batches); ``None`` with ``env_fns``.
    :param n_actors: Ray actors; each holds ``n_envs / n_actors`` environments (contiguous, as
        ``BarnNavSubprocVecEnv`` splits them).
    :param env_fns: Instead of BarnNav: picklable (cloudpickle) factories of Gymnasium envs, one per environment;
        each actor runs its share in a ``DummyVecEnv``.
    :param num_cpus_per_actor: Ray CPUs reserved per actor (1: one simulator per core).
    :param max_restarts: Ray restarts per actor before it is dead for good (-1: unlimited).
    :param restart_timeout: Seconds to wait for a dead actor to come back before raising.
    :param scheduling_strategy: Ray placement of the actors (``"SPREAD"``: over the nodes; ``"DEFAULT"``).
    :param address: Ray address to join when Ray is not initialised (``"auto"``, ``"HOST:PORT"``).
    :param env_kwargs: ``BarnNavVecEnv`` arguments (``observation``, ``image_size``, ``velocity``, ``barn_dir``,
        ``worlds``, ``reward``, ``max_steps``, ...).
    """

    actor_restarts: int
    """Actor deaths recovered from (each one truncated that actor's episodes); logged by ActorRestartCallback."""

    def __init__(
        self,
        n_envs: int | None = None,
        n_actors: int = 2,
        *,
        env_fns: Sequence[Callable[[], gym.Env]] | None = None,
        num_cpus_per_actor: float = 1.0,
        max_restarts: int = 10,
        restart_timeout: float = 120.0,
        scheduling_strategy: str = "SPREAD",
        address: str | None = None,
        **env_kwargs: Any,
    ) -> None:
        check_int(n_actors, "n_actors", owner="RayVecEnv")
        if env_fns is not None:
            if env_kwargs:
                raise TypeError(f"RayVecEnv: env_fns and BarnNav arguments {sorted(env_kwargs)} are exclusive")
            if n_envs is not None and n_envs != len(env_fns):
                raise ValueError(f"RayVecEnv: n_envs must be None or len(env_fns) = {len(env_fns)}, got {n_envs!r}")
            n_envs = len(env_fns)
        check_int(n_envs, "n_envs", n_actors, owner="RayVecEnv", note="one env per actor at least")
        check_int(max_restarts, "max_restarts", -1, owner="RayVecEnv")
        if not ray.is_initialized():
            ray.init(address=address)
        shares = np.array_split(np.arange(n_envs), n_actors)
        self.offsets = np.cumsum([0, *(len(s) for s in shares)])
        """Actor ``w`` runs environments ``offsets[w] .. offsets[w + 1] - 1``."""
        self.max_restarts, self.restart_timeout = max_restarts, float(restart_timeout)
        self.actor_restarts = 0
        self.restarts_per_actor = [0] * n_actors
        actor_class = ray.remote(EnvRunner).options(
            num_cpus=num_cpus_per_actor,
            max_restarts=max_restarts,
            max_task_retries=0,  # a step is not idempotent: a lost one is reported truncated, never re-run
            scheduling_strategy=scheduling_strategy,
        )
        self.factories: list[Callable[[], VecEnv]] = [
            functools.partial(_dummy_venv, [env_fns[i] for i in s])
            if env_fns is not None
            else functools.partial(_barn_nav_venv, len(s), env_kwargs)
            for s in shares
        ]
        self.actors = [actor_class.remote(factory) for factory in self.factories]
        spaces = ray.get([actor.spaces.remote() for actor in self.actors])
        observation_space, action_space, _ = spaces[0]
        sizes = [size for _, _, size in spaces]
        assert sizes == [len(s) for s in shares], f"actors hold {sizes} envs, expected {[len(s) for s in shares]}"
        super().__init__(n_envs, observation_space, action_space)
        self._last_obs: list[VecEnvObs | None] = [None] * n_actors
        """Each actor's observations as last returned: the terminal observations if it dies."""
        self._pending: list[ray.ObjectRef] | None = None
        self.closed = False

    # -- faults -----------------------------------------------------------------------------------------------
    def _wait_alive(self, w: int) -> None:
        """Block until actor ``w`` answers a ping (Ray is restarting it) or raise after ``restart_timeout``."""
        deadline = time.monotonic() + self.restart_timeout
        while True:
            try:
                ray.get(self.actors[w].ping.remote(), timeout=max(0.1, min(10.0, deadline - time.monotonic())))
                return
            except (RayActorError, GetTimeoutError) as exc:
                exhausted = 0 <= self.max_restarts < self.restarts_per_actor[w]
                if (isinstance(exc, ActorDiedError) and exhausted) or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"RayVecEnv: actor {w} (envs {self.offsets[w]}..{self.offsets[w + 1] - 1}) is dead after "
                        f"{self.restarts_per_actor[w]} restarts (max_restarts={self.max_restarts})"
                    ) from exc
                time.sleep(0.1)

    def _restart(self, w: int, seed: int | None = None, options: list[dict] | None = None) -> tuple[VecEnvObs, list]:
        """Count actor ``w``'s death, wait for its restart and reset its envs: ``(obs, reset_infos)``."""
        self.actor_restarts += 1
        self.restarts_per_actor[w] += 1
        warnings.warn(
            f"RayVecEnv: actor {w} died ({self.actor_restarts} restarts so far); once Ray has restarted it, "
            f"its episodes {self.offsets[w]}..{self.offsets[w + 1] - 1} are reported truncated",
            RuntimeWarning,
            stacklevel=3,
        )
        while True:
            self._wait_alive(w)
            try:
                return ray.get(self.actors[w].reset.remote(seed, options))
            except RayActorError:  # died again while resetting
                self.restarts_per_actor[w] += 1
                self.actor_restarts += 1

    def _truncated_step(self, w: int) -> RunnerStep:
        """The step of actor ``w``'s envs when it died: all truncated, restarted into fresh episodes."""
        obs, reset_infos = self._restart(w)
        n = int(self.offsets[w + 1] - self.offsets[w])
        last = self._last_obs[w]
        infos = [
            {"TimeLimit.truncated": True, "terminal_observation": _index(last, j), "actor_restarted": True}
            for j in range(n)
        ]
        return obs, np.zeros(n, dtype=np.float32), np.ones(n, dtype=bool), infos, reset_infos

    def _call(self, name: str, requests: dict[int, tuple[tuple, dict]]) -> list[Any]:
        """``EnvRunner.call(name, ...)`` on the actors of ``requests`` (actor -> (args, kwargs)), in parallel; an
        actor that died is waited for and asked again (its episodes are truncated at the next step)."""
        refs = {w: self.actors[w].call.remote(name, *args, **kwargs) for w, (args, kwargs) in requests.items()}
        results = []
        for w, ref in refs.items():
            try:
                results.append(ray.get(ref))
            except RayActorError:
                self._wait_alive(w)
                args, kwargs = requests[w]
                results.append(ray.get(self.actors[w].call.remote(name, *args, **kwargs)))
        return results

    def _all(self, name: str, *args: Any, **kwargs: Any) -> list[Any]:
        return self._call(name, {w: (args, kwargs) for w in range(len(self.actors))})

    def _by_actor(self, indices: VecEnvIndices) -> dict[int, list[int]]:
        """Actor -> its local env indices, for global ``indices``."""
        local: dict[int, list[int]] = {}
        for i in self._get_indices(indices):
            w = int(np.searchsorted(self.offsets, i, side="right") - 1)
            local.setdefault(w, []).append(i - int(self.offsets[w]))
        return local

    def actor_pids(self) -> list[int]:
        """Process id of each actor (on its node), e.g. to watch or kill one."""
        return ray.get([actor.ping.remote() for actor in self.actors])

    # -- VecEnv -----------------------------------------------------------------------------------------------
    def reset(self) -> VecEnvObs:
        refs = []
        for w, actor in enumerate(self.actors):
            seed = self._seeds[self.offsets[w]]
            options = self._options[self.offsets[w] : self.offsets[w + 1]]
            refs.append((seed, options, actor.reset.remote(seed, options)))
        parts = []
        for w, (seed, options, ref) in enumerate(refs):
            try:
                parts.append(ray.get(ref))
            except RayActorError:
                parts.append(self._restart(w, seed, options))
        self._last_obs = [obs for obs, _ in parts]
        self.reset_infos = [info for _, infos in parts for info in infos]
        self._reset_seeds()
        self._reset_options()
        self._pending = None
        return _concat(self._last_obs)

    def step_async(self, actions: np.ndarray) -> None:
        actions = np.asarray(actions).reshape(self.num_envs, -1)
        self._pending = [
            actor.step.remote(actions[self.offsets[w] : self.offsets[w + 1]]) for w, actor in enumerate(self.actors)
        ]

    def step_wait(self) -> VecEnvStepReturn:
        if self._pending is None:
            raise RuntimeError("RayVecEnv.step_wait() without step_async()")
        pending, self._pending = self._pending, None
        parts: list[RunnerStep] = []
        for w, ref in enumerate(pending):
            try:
                part = ray.get(ref)
            except RayActorError:  # died during the step
                part = None
            parts.append(self._truncated_step(w) if part is None else part)  # None: restarted before the step
        for w, (obs, _, _, _, reset_infos) in enumerate(parts):
            self._last_obs[w] = obs
            if reset_infos is not None:
                self.reset_infos[self.offsets[w] : self.offsets[w + 1]] = reset_infos
        infos = [_own(info) for part in parts for info in part[3]]
        rewards = np.concatenate([part[1] for part in parts])
        return _concat(self._last_obs), rewards, np.concatenate([part[2] for part in parts]), infos

    def close(self) -> None:
        if self.closed:
            return
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.closed = True

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [image for part in self._all("get_images") for image in part]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        local = self._by_actor(indices)
        parts = self._call("get_attr", {w: ((attr_name, ix), {}) for w, ix in local.items()})
        return [value for part in parts for value in part]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        self._call("set_attr", {w: ((attr_name, value, ix), {}) for w, ix in self._by_actor(indices).items()})

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **kwargs: Any) -> list:
        local = self._by_actor(indices)
        requests = {w: ((method_name, *method_args), {**kwargs, "indices": ix}) for w, ix in local.items()}
        return [value for part in self._call("env_method", requests) for value in part]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        local = self._by_actor(indices)
        parts = self._call("env_is_wrapped", {w: ((wrapper_class, ix), {}) for w, ix in local.items()})
        return [value for part in parts for value in part]


def _index(obs: VecEnvObs, j: int) -> Any:
    return {k: np.array(v[j]) for k, v in obs.items()} if isinstance(obs, dict) else np.array(obs[j])


def _own(info: dict[str, Any]) -> dict[str, Any]:
    """``info`` with a writable copy of its terminal observation (Ray hands back read-only, store-backed arrays)."""
    terminal = info.get("terminal_observation")
    if terminal is not None:
        info["terminal_observation"] = (
            {k: np.array(v) for k, v in terminal.items()} if isinstance(terminal, dict) else np.array(terminal)
        )
    return info


def _concat(parts: Sequence[VecEnvObs]) -> VecEnvObs:
    """Batched observations of the actors, in actor order (arrays or dicts of arrays); always a new array."""
    if isinstance(parts[0], dict):
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    return np.concatenate(parts)
