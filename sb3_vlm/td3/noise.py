"""The Gaussian exploration noise inside an SB3 ``ActionNoise``: its members and their standard deviation."""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.noise import ActionNoise, NormalActionNoise, VectorizedActionNoise

__all__ = ["noise_std", "normal_noises"]


def normal_noises(noise: ActionNoise | None) -> list[NormalActionNoise]:
    """The Gaussian noises inside ``noise`` (one, or one per env of a ``VectorizedActionNoise``)."""
    if isinstance(noise, VectorizedActionNoise):
        return [n for inner in noise.noises for n in normal_noises(inner)]
    return [noise] if isinstance(noise, NormalActionNoise) else []


def noise_std(noise: ActionNoise | None) -> float:
    """Mean standard deviation of the Gaussian exploration noise in ``noise`` ([-1, 1] action units); 0 without."""
    noises = normal_noises(noise)
    return float(np.mean([n._sigma for n in noises])) if noises else 0.0
