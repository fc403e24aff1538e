"""One loader for every policy format sb3-vlm reads: ``load_policy(spec)`` -> an object with ``predict`` (planner
parameters in physical units) and ``act``. ``spec`` is ``dwa``, fixed parameters, an APPLR ``policy_actor``, an SB3
zip, a ``save_pretrained`` directory or an FTRL supervised checkpoint, recognised here and nowhere else
(docs/guide/ftrl_workflow.md "One loader for every policy")."""

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
