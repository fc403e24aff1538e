"""Reward wrappers that add a :class:`~sb3_vlm.rewards.judge.VLMJudge` score to an env's reward:
:class:`VLMJudgeReward` (one Gymnasium env) and :class:`VecVLMJudgeReward` (any SB3 ``VecEnv``, judgements of one
step sent together); modes and failures: docs/guide/judge.md "What is sent and what a score means"."""

from __future__ import annotations

import concurrent.futures as cf
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvObs, VecEnvStepReturn, VecEnvWrapper

from sb3_vlm._validation import check_int
from sb3_vlm.rewards.judge import JudgeResult, VLMJudge

__all__ = ["EpisodeFrames", "JudgeRewardConfig", "VLMJudgeReward", "VecVLMJudgeReward"]

FrameFn = Callable[[Any], np.ndarray]


class EpisodeFrames:
    """Frames of one running episode, in bounded memory.

    ``terminal`` mode keeps every ``stride``-th frame, doubling the stride (and dropping every other kept frame)
    whenever more than ``capacity`` are kept, plus the latest frame: an even sample of any episode length.
    ``window`` mode keeps the last ``window`` frames.

    :param mode: ``"terminal"`` or ``"window"``.
    :param window: Window length (steps) of ``"window"`` mode.
    :param capacity: Frames kept at most in ``"terminal"`` mode (>= 2).
    """

    def __init__(self, mode: str, window: int, capacity: int) -> None:
        self.mode, self.window, self.capacity = mode, window, max(2, capacity)
        self.reset(None)

    def reset(self, frame: np.ndarray | None) -> None:
        """Start a new episode (with its first frame, if there is one)."""
        self.kept: list[np.ndarray] = []
        self.recent: deque[np.ndarray] = deque(maxlen=self.window)
        self.latest: np.ndarray | None = None
        self.count, self.stride = 0, 1
        self.since_judged = 0
        if frame is not None:
            self.add(frame, step=False)

    def add(self, frame: np.ndarray, step: bool = True) -> None:
        """Append a frame (``step``: it follows a step, which counts toward the next window)."""
        frame = np.array(frame, copy=True)
        if self.mode == "window":
            self.recent.append(frame)
        else:
            if self.count % self.stride == 0:
                self.kept.append(frame)
                if len(self.kept) > self.capacity:
                    self.kept = self.kept[::2]
                    self.stride *= 2
            self.latest = frame
            self.count += 1
        self.since_judged += int(step)

    def window_due(self) -> bool:
        """A full window of steps has passed since the last judgement (``"window"`` mode)."""
        return self.mode == "window" and self.since_judged >= self.window

    def frames(self) -> list[np.ndarray]:
        """The frames to judge now: the kept ones and the latest (``terminal``), or the window (``window``); the
        window count restarts."""
        self.since_judged = 0
        if self.mode == "window":
            return list(self.recent)
        if self.latest is not None and (not self.kept or self.kept[-1] is not self.latest):
            return [*self.kept, self.latest]
        return list(self.kept)


@dataclass(frozen=True)
class JudgeRewardConfig:
    """How both wrappers turn judgements into rewards (their keyword arguments; see the module docstring).

    :param mode: ``"terminal"`` or ``"window"``.
    :param window: Steps per window in ``"window"`` mode.
    :param env_weight: Weight of the env's own reward (every step).
    :param judge_weight: Weight of the judge's score (judged steps).
    :param failure_score: Score used when a judgement fails, or None to add nothing.
    :param frame_source: ``"auto"`` (the observation if it is an image, or its ``"image"`` key, else the render),
        ``"observation"``, ``"render"`` (a single env needs ``render_mode="rgb_array"``), or a callable
        ``f(obs) -> image`` of one env's observation.
    :param max_wait: Seconds a step may wait for its judgements (default: the judge's ``timeout``).
    :param max_frames: Frames an episode keeps in ``"terminal"`` mode (evenly thinned beyond).
    """

    mode: str = "terminal"
    window: int = 16
    env_weight: float = 1.0
    judge_weight: float = 1.0
    failure_score: float | None = None
    frame_source: str | FrameFn = "auto"
    max_wait: float | None = None
    max_frames: int = 64

    def __post_init__(self) -> None:
        if self.mode not in ("terminal", "window"):
            raise ValueError(f"mode must be 'terminal' or 'window', got {self.mode!r}")
        check_int(self.window, "window", note="steps")
        if self.max_wait is not None and not self.max_wait > 0:
            raise ValueError(f"max_wait must be > 0 s, got {self.max_wait!r}")
        if not (callable(self.frame_source) or self.frame_source in ("auto", "observation", "render")):
            raise ValueError(
                f"frame_source must be 'auto', 'observation', 'render' or a callable, got {self.frame_source!r}"
            )

    @classmethod
    def build(cls, config: JudgeRewardConfig | None, overrides: dict[str, Any]) -> JudgeRewardConfig:
        """``config`` (default: the defaults) with the wrapper's keyword ``overrides`` applied."""
        return replace(config or cls(), **overrides)

    def frames_from(self, observation_space: spaces.Space) -> str | FrameFn:
        """``frame_source`` with ``"auto"`` resolved against ``observation_space``: ``"observation"``,
        ``"render"`` or the callable."""
        source = self.frame_source
        if source == "auto":
            source = "observation" if _is_image(observation_space) else "render"
        if source == "observation" and not _is_image(observation_space):
            raise ValueError(f"frame_source='observation' needs an image observation, got {observation_space}")
        return source


def _is_image(space: spaces.Space) -> bool:
    if isinstance(space, spaces.Dict) and "image" in space.spaces:
        space = space.spaces["image"]
    return (
        isinstance(space, spaces.Box)
        and space.dtype == np.uint8
        and len(space.shape) == 3
        and 3 in (space.shape[0], space.shape[-1])
    )


def _image_of(obs: Any) -> np.ndarray:
    return obs["image"] if isinstance(obs, dict) else obs


class _Blend:
    """What both wrappers share: the judge, the weights and the per-step reward of a judgement."""

    def __init__(self, judge: VLMJudge, config: JudgeRewardConfig) -> None:
        if not isinstance(judge, VLMJudge):
            raise TypeError(f"judge must be a VLMJudge, got {type(judge).__name__}")
        self.judge, self.config, self.failures = judge, config, 0
        self.env_weight, self.judge_weight = float(config.env_weight), float(config.judge_weight)
        self.failure_score = config.failure_score
        self.max_wait = judge.timeout if config.max_wait is None else float(config.max_wait)

    def episode_frames(self) -> EpisodeFrames:
        """A fresh :class:`EpisodeFrames` for one env (keeping at least as many frames as the judge sends)."""
        config = self.config
        return EpisodeFrames(config.mode, config.window, max(config.max_frames, self.judge.num_frames))

    def collect(self, futures: list[cf.Future[JudgeResult]]) -> list[JudgeResult]:
        """Wait for ``futures`` together, ``max_wait`` s at most; the unfinished ones are ``"deadline"`` failures
        (their answers still fill the cache when they arrive)."""
        cf.wait(futures, timeout=self.max_wait)
        results = []
        for future in futures:
            if not future.done():
                self.judge.count_failure("deadline")
                results.append(JudgeResult(None, failure="deadline"))
                continue
            try:
                results.append(future.result())
            except BaseException:  # cancelled by judge.close(): counted like any failure
                self.judge.count_failure("error")
                results.append(JudgeResult(None, failure="error"))
        return results

    def apply(self, reward: float, result: JudgeResult, info: dict[str, Any]) -> float:
        """The judged step's reward; writes ``judge_score`` / ``judge_failure`` and ``judge_failures`` into info."""
        total = self.env_weight * float(reward)
        if result.ok:
            assert result.score is not None
            info["judge_score"] = result.score
            total += self.judge_weight * result.score
        else:
            self.failures += 1
            info["judge_failure"] = result.failure
            if self.failure_score is not None:
                total += self.judge_weight * self.failure_score
        info["judge_failures"] = self.failures
        return total


class _Judged:
    """The judge and failure count of a wrapper that holds a :class:`_Blend` as ``blend``."""

    blend: _Blend

    @property
    def judge(self) -> VLMJudge:
        return self.blend.judge

    @property
    def failures(self) -> int:
        """Failed judgements of this wrapper so far."""
        return self.blend.failures


class VLMJudgeReward(_Judged, gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Add a VLM judge's score to one env's reward (see the module docstring for modes and failures).

    Example:
        >>> judge = VLMJudge(JudgeSettings(url, model))
        >>> env = VLMJudgeReward(gym.make("BarnNav-v0", render_mode="rgb_array"), judge, mode="window")

    Args:
        env: The env. Its frames come from ``frame_source``.
        judge: The :class:`VLMJudge` (may be shared by several wrappers).
        config: A :class:`JudgeRewardConfig` (default: its defaults).
        **overrides: Fields of :class:`JudgeRewardConfig` (``mode``, ``window``, ``env_weight``, ``judge_weight``,
            ``failure_score``, ``frame_source``, ``max_wait``, ``max_frames``) replacing those of ``config``.
    """

    def __init__(
        self, env: gym.Env, judge: VLMJudge, config: JudgeRewardConfig | None = None, **overrides: Any
    ) -> None:
        config = JudgeRewardConfig.build(config, overrides)
        gym.utils.RecordConstructorArgs.__init__(self, mode=config.mode, window=config.window)
        gym.Wrapper.__init__(self, env)
        self.blend = _Blend(judge, config)
        self._frame = self._frame_fn(config.frames_from(self.observation_space))
        self._episode = self.blend.episode_frames()

    def _frame_fn(self, source: str | FrameFn) -> FrameFn:
        if callable(source):
            return source
        if source == "observation":
            return _image_of
        if self.env.render_mode != "rgb_array":
            raise ValueError(
                "frame_source='render' needs an env made with render_mode='rgb_array', "
                f"got render_mode={self.env.render_mode!r}"
            )
        return lambda obs: np.asarray(self.env.render())

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._episode.reset(self._frame(obs))
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._episode.add(self._frame(obs))
        ended = terminated or truncated
        if ended or self._episode.window_due():
            (result,) = self.blend.collect([self.judge.submit(self._episode.frames())])
            reward = self.blend.apply(float(reward), result, info)
        else:
            reward = self.blend.env_weight * float(reward)
        return obs, reward, terminated, truncated, info


class VecVLMJudgeReward(_Judged, VecEnvWrapper):
    """
    Add a VLM judge's score to the rewards of a ``VecEnv`` (see the module docstring for modes and failures). The
    judgements due at one step (episodes ending, windows completing) are submitted together and waited for together,
    at most ``max_wait`` seconds in all.

    Frames: ``"observation"`` takes each env's observation (``infos[i]["terminal_observation"]`` for the last frame
    of an episode); ``"render"`` takes ``venv.get_images()`` after every step (an auto-reset VecEnv has already
    started the next episode when it reports ``done``, so the last rendered frame of an episode is the one before
    its final step).

    :param venv: The VecEnv (e.g. ``BarnNavVecEnv``, possibly behind ``VecMonitor``: put the judge inside the
        monitor to log the judged returns as ``rollout/ep_rew_mean``).
    :param judge: The :class:`VLMJudge`.
    :param config: A :class:`JudgeRewardConfig` (default: its defaults).
    :param close_judge: ``close()`` also closes the judge (the wrapper owns it).
    :param overrides: Fields of :class:`JudgeRewardConfig` replacing those of ``config``
        (``VecVLMJudgeReward(venv, judge, mode="window", window=8)``).
    """

    def __init__(
        self,
        venv: VecEnv,
        judge: VLMJudge,
        config: JudgeRewardConfig | None = None,
        close_judge: bool = False,
        **overrides: Any,
    ) -> None:
        super().__init__(venv)
        self.close_judge = close_judge
        config = JudgeRewardConfig.build(config, overrides)
        self.blend = _Blend(judge, config)
        self.frame_source = config.frames_from(self.observation_space)
        self._episodes = [self.blend.episode_frames() for _ in range(self.num_envs)]

    def _frames(self, obs: VecEnvObs) -> list[np.ndarray]:
        """One frame per env of the current observations (or renders)."""
        if self.frame_source == "render":
            return [np.asarray(image) for image in self.venv.get_images()]
        fn = self.frame_source if callable(self.frame_source) else _image_of
        if isinstance(obs, dict):
            return [fn({k: v[i] for k, v in obs.items()}) for i in range(self.num_envs)]
        return [fn(obs[i]) for i in range(self.num_envs)]

    def close(self) -> None:
        self.venv.close()
        if self.close_judge:
            self.judge.close()

    def reset(self) -> VecEnvObs:
        obs = self.venv.reset()
        for episode, frame in zip(self._episodes, self._frames(obs), strict=True):
            episode.reset(frame)
        return obs

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.venv.step_wait()
        frames = self._frames(obs)
        due, futures = [], []
        for i, episode in enumerate(self._episodes):
            if dones[i] and self.frame_source != "render":
                terminal = infos[i].get("terminal_observation")
                if terminal is not None:
                    fn = self.frame_source if callable(self.frame_source) else _image_of
                    episode.add(fn(terminal))
            elif not dones[i]:
                episode.add(frames[i])
            if dones[i] or episode.window_due():
                due.append(i)
                futures.append(self.judge.submit(episode.frames()))
            if dones[i]:
                episode.reset(frames[i])  # the first frame of the next episode (auto-reset)
        new_rewards = self.blend.env_weight * np.asarray(rewards, dtype=np.float32)
        for i, result in zip(due, self.blend.collect(futures), strict=True):
            new_rewards[i] = self.blend.apply(float(rewards[i]), result, infos[i])
        return obs, new_rewards.astype(np.float32), dones, infos
