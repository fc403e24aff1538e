"""One loader for every policy format sb3-vlm reads: ``load_policy(spec)`` -> an object with ``predict``.

``spec`` is ``[name=]target``, where ``target`` is one of (recognised here and nowhere else):

* ``dwa`` (the planner's default parameters) or ``dwa:max_vel_x=2.0,inflation_radius=0.6`` (fixed parameters);
* a directory with APPLR's ``policy_actor`` (the published ros_jackal actor, read safely), or that file;
* an SB3 ``.zip`` (``TD3`` on the laser, ``VLMTD3`` on the costmap image);
* a directory written by ``VLMTD3Policy.save_pretrained`` / ``publish_policy`` (``actor_head/``: the TD3 actor);
* a supervised FTRL checkpoint (``regression_head/``: the SFT head's ``pred * std + mean``, as FTRL serves it).

Every loaded policy answers ``predict(observation, velocity=None, history=None, deterministic=True)`` with planner
parameters in physical units (``[B, P]``, or ``[P]`` for one unbatched observation), and ``act(obs)`` for a batch of
BarnNav observations (the env's ``P`` parameters, within their ranges). The server, the collector, eval/compare and
viz all load through here.
"""

from sb3_vlm.policies.base import FixedParams, LoadedPolicy, ParamTableLike, SB3Policy
from sb3_vlm.policies.directory import MODES, DirectoryOptions, VLMDirectoryPolicy, load_directory
from sb3_vlm.policies.loader import APPLR_ENV, applr_policy, load_policy

__all__ = [
    "APPLR_ENV",
    "MODES",
    "DirectoryOptions",
    "FixedParams",
    "LoadedPolicy",
    "ParamTableLike",
    "SB3Policy",
    "VLMDirectoryPolicy",
    "applr_policy",
    "load_directory",
    "load_policy",
]
