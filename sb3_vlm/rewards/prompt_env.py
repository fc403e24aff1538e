"""Prompt selection: an agent chooses which prompt a frozen, prompt-conditioned VLM policy gets for the next window.

:class:`FrozenPromptPolicy` is a supervised checkpoint (``sb3-vlm pretrain --prompts``) behind two calls: the pooled
256-d feature of a scene image (no prompt) and the planner parameters it answers for an image and a prompt.
:class:`PromptSelection` wraps a ``BarnNavCostmap-v0`` env: one step = one control window of ``window`` BarnNav steps
(0.5 s each) in which the frozen policy drives with the chosen prompt. Its ``action_masks()`` lets ``MaskablePPO``
(sb3-contrib) skip prompts that are not valid in the state. ``BarnNavPromptSelection-v0`` is registered by
``import sb3_vlm.rewards``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces

from envs.planners import PARAM_TABLES
from envs.render import DEFAULT_IMAGE_SIZE
from envs.wrappers import make_costmap_env
from sb3_vlm._constants import FEATURE_DIM, TINY
from sb3_vlm._validation import check_int
from sb3_vlm.model.extractor import VLMDPTExtractor
from sb3_vlm.sft.prompts import DEFAULT_PROMPTS, PROMPTS_FILE, PromptSpec, load_prompts, prompt_mask

__all__ = [
    "REWARD_KINDS",
    "FrozenPromptPolicy",
    "PromptSelection",
    "make_prompt_selection_env",
    "resolve_prompts",
]

REWARD_KINDS = ("true", "learned")


def resolve_prompts(
    checkpoint: str | os.PathLike, prompts: Sequence[PromptSpec] | str | os.PathLike | None = None
) -> list[PromptSpec]:
    """The prompts given (specs or a prompt file), else the checkpoint's ``prompts.yaml``, else the defaults."""
    if prompts is None:
        own = Path(checkpoint) / PROMPTS_FILE
        return load_prompts(own) if str(checkpoint) != TINY and own.is_file() else list(DEFAULT_PROMPTS)
    if isinstance(prompts, str | os.PathLike):
        return load_prompts(prompts)
    return list(prompts)


class FrozenPromptPolicy:
    """
    A frozen supervised VLM policy queried with a prompt.

    :param extractor: The checkpoint's extractor (its DPT head keeps the SFT ``mlp``); used frozen, in eval mode.
    :param prompts: The prompts it was trained with, in action order.
    :param planner: Local planner name (the parameter table of the outputs).
    """

    def __init__(self, extractor: VLMDPTExtractor, prompts: Sequence[PromptSpec], planner: str = "DWA"):
        if not prompts:
            raise ValueError("FrozenPromptPolicy: needs at least one prompt, got none")
        self.extractor = extractor.eval().requires_grad_(False)
        self.prompts = tuple(prompts)
        self.params = PARAM_TABLES[planner.upper()]

    @classmethod
    def from_pretrained(
        cls,
        checkpoint: str | os.PathLike = TINY,
        prompts: Sequence[PromptSpec] | str | os.PathLike | None = None,
        planner: str = "DWA",
        image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
        seed: int = 0,
    ) -> FrozenPromptPolicy:
        """
        :param checkpoint: An FTRL-layout checkpoint directory, or ``"tiny"`` (random head: for tests).
        :param prompts: Prompt specs or a prompt file; None: the checkpoint's ``prompts.yaml``, else the defaults.
        :param image_size: ``(height, width)`` of the scene images.
        :param seed: Weight seed of a fresh (``"tiny"``) model.
        """
        prompts = resolve_prompts(checkpoint, prompts)
        space = spaces.Box(0, 255, (3, *image_size), np.uint8)
        num_params = len(PARAM_TABLES[planner.upper()])
        extractor = VLMDPTExtractor(space, backbone=str(checkpoint), num_params=num_params, planner=planner, seed=seed)
        return cls(extractor, prompts, planner)

    @staticmethod
    def _tensor(images: np.ndarray) -> th.Tensor:
        """``[B, H, W, 3]`` uint8 -> ``[B, 3, H, W]``."""
        return th.from_numpy(np.ascontiguousarray(np.asarray(images).transpose(0, 3, 1, 2)))

    @th.no_grad()
    def features(self, images: np.ndarray) -> np.ndarray:
        """Pooled features ``[B, 256]`` float32 of scene images ``[B, H, W, 3]`` uint8 (no prompt)."""
        return self.extractor(self._tensor(images)).numpy()

    @th.no_grad()
    def parameters(self, images: np.ndarray, prompt_ids: Sequence[int]) -> np.ndarray:
        """
        Planner parameters ``[B, P]`` (physical units, clipped to the table's ranges; extra SFT outputs such as
        the next velocity dropped) for images ``[B, H, W, 3]`` uint8 and one prompt index per image.
        """
        texts = [self.prompts[int(k)].text for k in prompt_ids]
        out = self.extractor.predict_parameters(self._tensor(images), prompts=texts).double().numpy()
        return np.clip(out[:, : len(self.params)], self.params.low, self.params.high)


class PromptSelection(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """
    Prompt selection over a costmap BarnNav env.

    ## Action space
    ``Discrete(K)``: the prompt the frozen policy gets for the next window. ``action_masks()`` (``[K]`` bool, True =
    valid) marks prompts supported by the env's planner whose ``min_clearance`` (m) the nearest laser return
    respects; a masked action is replaced by the first valid prompt (``info["invalid_action"] = True``).

    ## Observation space
    ``Box(-inf, inf, (256,), float32)``: the frozen VLM's pooled feature of the current scene image.

    ## Rewards
    ``reward="true"``: the BarnNav reward summed over the window. ``reward="learned"``: a
    :class:`~sb3_vlm.rewards.reward_net.RewardNet`'s prediction of that sum from the feature, the prompt and the
    parameters of the window's first step. ``info`` always carries ``true_reward`` (and ``learned_reward`` when a
    network is given).

    ## Episode end
    The BarnNav episode's (success, collision, timeout); ``info["nav_metric"]`` at the last window.

    :param env: A ``BarnNavCostmap-v0`` env without velocity (image observation ``[H, W, 3]`` uint8).
    :param policy: The frozen prompt-conditioned policy.
    :param window: BarnNav steps per action (>= 1).
    :param reward: ``"true"`` or ``"learned"``.
    :param reward_net: Required for ``reward="learned"``.
    """

    def __init__(
        self,
        env: gym.Env,
        policy: FrozenPromptPolicy,
        window: int = 4,
        reward: str = "true",
        reward_net: Any = None,
    ):
        gym.utils.RecordConstructorArgs.__init__(self, window=window, reward=reward)
        gym.Wrapper.__init__(self, env)
        space = env.observation_space
        if not (isinstance(space, spaces.Box) and space.dtype == np.uint8 and space.shape[-1:] == (3,)):
            raise ValueError(f"PromptSelection needs a costmap env with image observations [H, W, 3], got {space}")
        check_int(window, "window", owner="PromptSelection", note="BarnNav steps")
        if reward not in REWARD_KINDS:
            raise ValueError(f"PromptSelection: reward must be one of {REWARD_KINDS}, got {reward!r}")
        if reward == "learned" and reward_net is None:
            raise ValueError("PromptSelection: reward='learned' needs a reward_net, got None")
        if reward_net is not None and reward_net.config.prompts != tuple(p.text for p in policy.prompts):
            raise ValueError(
                "PromptSelection: the reward network was trained on prompts "
                f"{list(reward_net.config.prompts)}, the policy has {[p.text for p in policy.prompts]}"
            )
        self.policy, self.window, self.reward_kind, self.reward_net = policy, window, reward, reward_net
        self.planner = policy.params.planner
        if not any(s.supports(self.planner) and s.min_clearance == 0 for s in policy.prompts):
            raise ValueError(
                f"PromptSelection: at least one prompt must always be valid (planner {self.planner}, "
                "min_clearance 0), got none"
            )
        self.action_space = spaces.Discrete(len(policy.prompts))
        self.observation_space = spaces.Box(-np.inf, np.inf, (FEATURE_DIM,), np.float32)
        self._image: np.ndarray | None = None
        self._feature: np.ndarray | None = None

    def _observe(self, image: np.ndarray) -> np.ndarray:
        self._image = image
        self._feature = self.policy.features(image[None])[0]
        return self._feature

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        image, info = self.env.reset(seed=seed, options=options)
        return self._observe(image), info

    def clearance(self) -> float:
        """Distance (m) of the nearest laser return now."""
        return float(self.env.unwrapped.batch.sim.ranges[0].min())

    def action_masks(self) -> np.ndarray:
        """``[K]`` bool: the prompts valid in the current state (see the class docstring)."""
        return prompt_mask(self.policy.prompts, self.planner, self.clearance())

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._image is None:
            raise RuntimeError("PromptSelection.step() before reset()")
        mask = self.action_masks()
        prompt = int(action)
        if not 0 <= prompt < len(mask):
            raise ValueError(f"PromptSelection: action must be a prompt index in [0, {len(mask)}), got {action!r}")
        invalid = not mask[prompt]
        if invalid:
            prompt = int(np.flatnonzero(mask)[0])
        feature, true_reward, first_params = self._feature, 0.0, None
        for _ in range(self.window):
            params = self.policy.parameters(self._image[None], [prompt])[0]
            first_params = params if first_params is None else first_params
            image, reward, terminated, truncated, info = self.env.step(params.astype(np.float32))
            true_reward += float(reward)
            self._image = image
            if terminated or truncated:
                break
        unit = self.policy.params.to_unit(first_params).astype(np.float32)
        info = dict(info, prompt=prompt, params_unit=unit, true_reward=true_reward, invalid_action=invalid)
        if self.reward_net is not None:
            info["learned_reward"] = float(self.reward_net.score(feature[None], np.array([prompt]), unit[None])[0])
        reward = true_reward if self.reward_kind == "true" else info["learned_reward"]
        return self._observe(self._image), reward, terminated, truncated, info


def make_prompt_selection_env(
    policy: str | os.PathLike = TINY,
    prompts: str | os.PathLike | None = None,
    window: int = 4,
    reward: str = "true",
    reward_net: str | os.PathLike | None = None,
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
    seed: int = 0,
    **kwargs: Any,
) -> PromptSelection:
    """
    ``BarnNavPromptSelection-v0``: :class:`PromptSelection` over ``BarnNavCostmap-v0(**kwargs)`` (``barn_dir``,
    ``worlds``, ``max_steps``, ...), everything given as paths so rl-zoo3 files can name it.

    :param policy: Prompt-conditioned checkpoint directory (or ``"tiny"``).
    :param prompts: Prompt file; None: the checkpoint's own (or the defaults).
    :param reward_net: Directory written by ``RewardNet.save_pretrained``.
    :param seed: Weight seed of a ``"tiny"`` policy.
    """
    from sb3_vlm.rewards.reward_net import RewardNet

    frozen = FrozenPromptPolicy.from_pretrained(policy, prompts, image_size=tuple(image_size), seed=seed)
    net = None if reward_net is None else RewardNet.from_pretrained(reward_net)
    env = make_costmap_env(image_size=tuple(image_size), **kwargs)
    return PromptSelection(env, frozen, window=window, reward=reward, reward_net=net)
