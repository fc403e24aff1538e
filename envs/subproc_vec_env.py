"""``BarnNavVecEnv`` split over worker processes: one batched simulator per CPU core.

The simulator is numpy on one core; a worker process per core, each stepping its share of the episodes as one
``BarnNavVecEnv``, uses the others. Episode ``i`` sees exactly what it would see in a single ``BarnNavVecEnv`` of the
same size and seed: the workers seed their episodes as the single env does.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

from envs.vec_env import BarnNavVecEnv

__all__ = ["BarnNavSubprocVecEnv"]


def _serve(remote: Connection, parent_remote: Connection, n_envs: int, kwargs: dict[str, Any]) -> None:
    """Worker loop: build a ``BarnNavVecEnv`` of ``n_envs`` and answer ``(name, args, kwargs)`` calls on it (a
    non-callable attribute is returned as is) until ``None`` arrives; exceptions are sent back."""
    parent_remote.close()
    venv = BarnNavVecEnv(n_envs, **kwargs)
    while (request := remote.recv()) is not None:
        name, args, call_kwargs = request
        try:
            attr = getattr(venv, name)
            remote.send((True, attr(*args, **call_kwargs) if callable(attr) else attr))
        except Exception as exc:  # handed to the caller, who raises it
            remote.send((False, exc))
    venv.close()
    remote.close()


class BarnNavSubprocVecEnv(VecEnv):
    """
    ``n_envs`` BarnNav episodes stepped by ``n_workers`` processes in parallel, each a :class:`BarnNavVecEnv` of its
    contiguous share of the episodes. Same observations, rewards, infos and seeding as ``BarnNavVecEnv(n_envs, ...)``.

    :param n_envs: Number of environments (>= ``n_workers``).
    :param n_workers: Worker processes; one per CPU core is the fastest.
    :param start_method: ``multiprocessing`` start method; default ``"forkserver"`` where available, else
        ``"spawn"`` (as SB3's ``SubprocVecEnv``: forking a process that runs torch threads is unsafe).
    :param kwargs: :class:`BarnNavVecEnv` arguments (``observation``, ``image_size``, ``velocity``, ``barn_dir``,
        ``worlds``, ``reward``, ...).
    """

    def __init__(self, n_envs: int, n_workers: int = 2, start_method: str | None = None, **kwargs: Any) -> None:
        if not (isinstance(n_workers, int) and n_workers > 0):
            raise ValueError(f"n_workers must be a positive int, got {n_workers!r}")
        if not (isinstance(n_envs, int) and n_envs >= n_workers):
            raise ValueError(f"n_envs must be an int >= n_workers ({n_workers}), got {n_envs!r}")
        if start_method is None:
            start_method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        context = mp.get_context(start_method)
        sizes = [len(share) for share in np.array_split(np.arange(n_envs), n_workers)]
        self.offsets = np.cumsum([0, *sizes])
        """Worker ``w`` runs episodes ``offsets[w] .. offsets[w + 1] - 1``."""
        self.remotes: list[Connection] = []
        self.processes = []
        for size in sizes:
            remote, work_remote = context.Pipe()
            process = context.Process(target=_serve, args=(work_remote, remote, size, kwargs), daemon=True)
            process.start()
            work_remote.close()
            self.remotes.append(remote)
            self.processes.append(process)
        self.closed = False
        self.render_mode = "rgb_array"
        observation_space = self._call("observation_space", {0: ((), {})})[0]
        action_spaces = self._call("action_space")  # from every worker: one that failed to start raises here
        super().__init__(n_envs, observation_space, action_spaces[0])

    # -- calls into the workers -------------------------------------------------------------------------------
    def _send(self, name: str, requests: dict[int, tuple[tuple, dict]] | None = None) -> list[int]:
        """Call ``name`` on each worker of ``requests`` (worker -> (args, kwargs); default: all, no arguments)."""
        if requests is None:
            requests = {w: ((), {}) for w in range(len(self.remotes))}
        for w, (args, kwargs) in requests.items():
            try:
                self.remotes[w].send((name, args, kwargs))
            except OSError:  # BrokenPipeError: the worker is gone
                raise self._dead(w) from None
        return list(requests)

    def _recv(self, w: int) -> Any:
        """Worker ``w``'s answer; polled, so that a worker that dies without closing its pipe is noticed too."""
        while not self.remotes[w].poll(1.0):
            if not self.processes[w].is_alive():
                raise self._dead(w)
        try:
            return self.remotes[w].recv()
        except (EOFError, OSError):
            raise self._dead(w) from None

    def _dead(self, w: int) -> RuntimeError:
        """The error for worker ``w`` found dead (killed, out of memory, a crash in native code)."""
        process = self.processes[w]
        process.join(timeout=1.0)
        episodes = f"{self.offsets[w]}..{self.offsets[w + 1] - 1}"
        return RuntimeError(
            f"BarnNavSubprocVecEnv: worker {w} (pid {process.pid}, episodes {episodes}) died with exit code "
            f"{process.exitcode}; close this env and make a new one (a killed training run: --resume it)"
        )

    def _receive(self, workers: Sequence[int]) -> list[Any]:
        results = [self._recv(w) for w in workers]
        for ok, value in results:
            if not ok:
                raise value
        return [value for _, value in results]

    def _call(self, name: str, requests: dict[int, tuple[tuple, dict]] | None = None) -> list[Any]:
        return self._receive(self._send(name, requests))

    def _each(self, args_of: Callable[[int], tuple]) -> dict[int, tuple[tuple, dict]]:
        """Requests giving every worker ``w`` the arguments ``args_of(w)``."""
        return {w: (args_of(w), {}) for w in range(len(self.remotes))}

    def _share(self, values: Sequence[Any], w: int) -> Sequence[Any]:
        return values[self.offsets[w] : self.offsets[w + 1]]

    def _by_worker(self, indices: VecEnvIndices) -> dict[int, list[int]]:
        """Worker -> its local indices, for global ``indices``."""
        local: dict[int, list[int]] = {}
        for i in self._get_indices(indices):
            w = int(np.searchsorted(self.offsets, i, side="right") - 1)
            local.setdefault(w, []).append(i - int(self.offsets[w]))
        return local

    def _reset_infos(self, workers: Sequence[int] | None = None) -> None:
        """Fetch ``reset_infos`` from ``workers`` (all by default) into their slices of ours."""
        workers = range(len(self.remotes)) if workers is None else workers
        for w, infos in zip(workers, self._call("reset_infos", {w: ((), {}) for w in workers}), strict=True):
            self.reset_infos[self.offsets[w] : self.offsets[w + 1]] = infos

    # -- VecEnv -----------------------------------------------------------------------------------------------
    def seed(self, seed: int | None = None) -> Sequence[None | int]:
        if seed is None:  # as VecEnv.seed: one draw, then consecutive seeds
            seed = int(np.random.randint(0, np.iinfo(np.uint32).max, dtype=np.uint32))
        self._call("seed", self._each(lambda w: (seed + int(self.offsets[w]),)))
        return [seed + i for i in range(self.num_envs)]

    def reset(self) -> VecEnvObs:
        self._call("set_options", self._each(lambda w: (list(self._share(self._options, w)),)))
        obs = _concat(self._call("reset"))
        self._reset_infos()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        actions = np.asarray(actions, dtype=np.float32).reshape(self.num_envs, -1)
        self._pending = self._send("step", self._each(lambda w: (self._share(actions, w),)))

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = zip(*self._receive(self._pending), strict=True)
        dones = np.concatenate(dones)
        # Finished episodes were reset in their worker: fetch the new reset infos of those workers only.
        self._reset_infos([w for w in range(len(self.remotes)) if dones[self.offsets[w] : self.offsets[w + 1]].any()])
        return _concat(obs), np.concatenate(rewards), dones, [info for part in infos for info in part]

    def close(self) -> None:
        if self.closed:
            return
        for remote in self.remotes:
            with contextlib.suppress(OSError):  # a dead worker's pipe is broken
                remote.send(None)
        for process in self.processes:
            process.join()
        self.closed = True

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [image for images in self._call("get_images") for image in images]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        local = self._by_worker(indices)
        parts = self._call("get_attr", {w: ((attr_name, ix), {}) for w, ix in local.items()})
        return [value for part in parts for value in part]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        self._call("set_attr", {w: ((attr_name, value, ix), {}) for w, ix in self._by_worker(indices).items()})

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **kwargs: Any) -> list:
        local = self._by_worker(indices)
        requests = {w: ((method_name, *method_args), {**kwargs, "indices": ix}) for w, ix in local.items()}
        return [value for part in self._call("env_method", requests) for value in part]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]


def _concat(parts: Sequence[VecEnvObs]) -> VecEnvObs:
    """Batched observations of the workers, in worker order (arrays or dicts of arrays)."""
    if isinstance(parts[0], dict):
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    return np.concatenate(parts)
