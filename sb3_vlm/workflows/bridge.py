"""Bridge to collectors outside Ray: a buffer directory of trajectory files in, policy directories out (the FTRL/APPLR
file protocol), for :class:`~sb3_vlm.distributed.AsyncLearner` and ``sb3-vlm learn-from-buffer``
(docs/guide/ray.md "How the asynchronous learner works")."""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from gymnasium import spaces
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first

from sb3_vlm._validation import check_int
from sb3_vlm.formats.trajectories import CONSUMED_SUFFIX, Trajectory, load_trajectories

__all__ = ["BufferDirectoryBridge", "episode_id", "episode_info"]

TEST_DIR = "test_sync"
"""Where test episodes are written (FTRL: ``<buffer>/test_sync/test_<id>_<n>.pickle``)."""


def episode_info(trajectory: Trajectory) -> dict[str, Any] | None:
    """The final ``info`` of an episode file as :class:`~sb3_vlm.callbacks.NavMetricsCallback` reads it from a live
    env (``status``, ``nav_metric``, ``time``, ``world``, ``episode`` = ``{"r": return, "l": steps}``, plus
    ``model_version``); None for a file that records no status or nav metric (ros_jackal)."""
    if trajectory.status is None or trajectory.nav_metric is None:
        return None
    rewards = [t.reward for t in trajectory.transitions]
    return {
        "status": trajectory.status,
        "nav_metric": trajectory.nav_metric,
        "time": trajectory.time if trajectory.time is not None else float("nan"),
        "world": trajectory.world,
        "episode": {"r": float(sum(rewards)), "l": len(rewards)},
        "model_version": trajectory.model_version,
    }


def episode_id(path: Path) -> tuple[int, int]:
    """``(actor id, n)`` of ``.../actor_<id>/traj_<n>.pickle`` (with or without the ``.consumed`` suffix)."""
    actor = re.fullmatch(r"actor_(\d+)", path.parent.name)
    number = re.match(r"traj_(\d+)\.pickle", path.name)
    if actor is None or number is None:
        raise ValueError(f"not a collector's trajectory file: {path}")
    return int(actor.group(1)), int(number.group(1))


def image_size_of(space: spaces.Space) -> tuple[int, int] | None:
    """``(height, width)`` of the image in an observation space (``Box`` or ``Dict["image"]``), None without one."""
    if isinstance(space, spaces.Dict):
        space = space.spaces.get("image")
    if space is None or not is_image_space(space, check_channels=False):
        return None
    shape = space.shape
    return (shape[1], shape[2]) if is_image_space_channels_first(space) else (shape[0], shape[1])


class BufferDirectoryBridge:
    """
    Learner-side end of the file protocol.

    :param buffer_dir: Directory the external collectors write trajectory pickles into (created if missing).
    :param params: Planner parameter table of the actions (default: ``envs.planners.DWA_PARAMS``).
    :param publish_dir: Policy directory to publish to (``VLMTD3Policy`` only), or None not to publish.
    :param servers: Inference server URLs to ``/reload`` after each publication.
    :param publish_every: Publish every this many weight versions.
    :param min_age_s: Files modified more recently are left for the next poll (still being written).
    :param include_test: Also read ``test_<id>_<n>.pickle`` files.
    :param hold_consumed: Rename the files added to the buffer (``<name>.consumed``) instead of deleting them, until
        :meth:`release` (the caller's checkpoint holds their transitions).
    """

    def __init__(
        self,
        buffer_dir: str | os.PathLike,
        *,
        params: Any = None,
        publish_dir: str | os.PathLike | None = None,
        servers: Sequence[str] = (),
        publish_every: int = 1,
        min_age_s: float = 2.0,
        include_test: bool = False,
        hold_consumed: bool = False,
    ) -> None:
        check_int(publish_every, "publish_every", owner="BufferDirectoryBridge")
        if params is None:
            from envs.planners import DWA_PARAMS  # the simulator's table; imported only when none is given

            params = DWA_PARAMS
        self.buffer_dir = Path(buffer_dir)
        self.buffer_dir.mkdir(parents=True, exist_ok=True)
        self.params, self.publish_dir, self.servers = params, publish_dir, list(servers)
        self.publish_every, self.min_age_s, self.include_test = publish_every, min_age_s, include_test
        self.transitions = 0
        """Transitions added from files so far."""
        self.episodes = 0
        self.skipped_last_poll: list[Any] = []
        """``SkippedFile`` entries of the last poll (files still being written, corrupt or of a wrong schema)."""
        self.last_episodes: list[dict[str, Any]] = []
        """:func:`episode_info` of the episodes the last poll added (those that record their outcome)."""
        self.published_versions: list[int] = []
        self.hold_consumed = hold_consumed
        self.held: list[Path] = []
        """Files added to the buffer, renamed ``<name>.consumed``, not yet released (``hold_consumed``)."""
        self.consumed: list[list[int]] = []
        """``[actor id, n, steps]`` of every episode added (``hold_consumed``), in buffer order: the replay buffer's
        rows are the steps of these episodes, one after the other (one env)."""

    def poll(self, model: OffPolicyAlgorithm, max_transitions: int | None = None) -> int:
        """
        Add the complete trajectory files of the buffer directory to ``model``'s replay buffer and delete them.

        :param max_transitions: Stop after the file that reaches this many transitions (oldest files first); the
            others are left for the next poll (a backlog is spread over cycles). None: every file.
        :return: Transitions added (``model.num_timesteps`` is advanced by as many).
        """
        from sb3_vlm.td3.replay import fill_replay_buffer

        result = load_trajectories(
            self.buffer_dir,
            params=self.params,
            image_size=image_size_of(model.observation_space),
            include_test=self.include_test,
            min_age_s=self.min_age_s,
        )
        self.skipped_last_poll = result.skipped
        if max_transitions is not None:
            taken, total = [], 0
            for trajectory in sorted(result.trajectories, key=lambda t: t.path.stat().st_mtime):
                if total >= max_transitions:
                    break
                taken.append(trajectory)
                total += len(trajectory.transitions)
            result.trajectories = taken
        self.last_episodes = [i for i in map(episode_info, result.trajectories) if i is not None]
        if not result.trajectories:
            return 0
        added = fill_replay_buffer(model, result, learning_starts=None, delete_after_load=not self.hold_consumed)
        if self.hold_consumed:
            for trajectory in result.trajectories:
                self.consumed.append([*episode_id(trajectory.path), len(trajectory.transitions)])
                held = trajectory.path.with_name(trajectory.path.name + CONSUMED_SUFFIX)
                os.replace(trajectory.path, held)
                self.held.append(held)
                for frame in trajectory.frames:
                    frame.unlink(missing_ok=True)
        model.num_timesteps += added
        self.transitions += added
        self.episodes += result.episodes
        return added

    def release(self) -> None:
        """Delete the held files: a checkpoint now holds their transitions."""
        for path in self.held:
            path.unlink(missing_ok=True)
        self.held = []

    def recover(self, committed: Collection[tuple[int, int]]) -> tuple[int, int]:
        """After a restart: delete the ``.consumed`` files of the episodes a checkpoint holds (``committed``
        ``(actor id, n)``), rename the others back so that the next poll reads them again.

        :return: ``(deleted, restored)``.
        """
        deleted = restored = 0
        for held in sorted(self.buffer_dir.glob(f"actor_*/traj_*.pickle{CONSUMED_SUFFIX}")):
            if episode_id(held) in committed:
                held.unlink()
                deleted += 1
            else:
                os.replace(held, held.with_name(held.name.removesuffix(CONSUMED_SUFFIX)))
                restored += 1
        return deleted, restored

    def poll_tests(self) -> list[dict[str, Any]]:
        """Read and delete the complete test episodes of ``<buffer>/test_sync/`` (not added to any buffer).

        :return: Their :func:`episode_info` (episodes that record no outcome are deleted all the same).
        """
        directory = self.buffer_dir / TEST_DIR
        if not directory.is_dir():
            return []
        result = load_trajectories(
            directory, params=self.params, image_size=None, include_test=True, min_age_s=self.min_age_s
        )
        for trajectory in result.trajectories:
            trajectory.path.unlink(missing_ok=True)
        return [i for i in map(episode_info, result.trajectories) if i is not None]

    def publish(self, model: OffPolicyAlgorithm, version: int, noise_std: float | None = None) -> Any:
        """Publish the policy for weight ``version`` if due (every ``publish_every``): the ``PublishResult``.

        :param noise_std: Exploration noise std sent with each ``/reload`` (``actor``-mode servers), or None.
        """
        if self.publish_dir is None or version % self.publish_every != 0:
            return None
        from sb3_vlm.serving.handoff import publish_policy
        from sb3_vlm.td3.policies import VLMTD3Policy

        if not isinstance(model.policy, VLMTD3Policy):
            raise TypeError(
                f"BufferDirectoryBridge: publishing needs a VLMTD3Policy, got {type(model.policy).__name__}"
            )
        names = list(self.params.names) if len(self.params) == model.action_space.shape[0] else None
        result = publish_policy(
            model.policy, self.publish_dir, self.servers, parameter_names=names, noise_std=noise_std
        )
        self.published_versions.append(version)
        return result
