"""File names of the FTRL checkpoint layout and fixed numbers shared by several modules."""

# FTRL supervised checkpoint layout (docs/compat/ftrl.md §3.1); the adapter files are PEFT's own names.
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
HEAD_DIR = "regression_head"
HISTORY_DIR = "history_encoder"
TORCH_WEIGHTS = "pytorch_model.bin"
HISTORY_CONFIG = "history_config.json"
NORMALIZATION_DIR = "normalization"
PARAM_MEAN = "param_mean.npy"
PARAM_STD = "param_std.npy"

# Additions of sb3-vlm to the layout: the TD3 heads, and where the base model comes from.
ACTOR_HEAD_DIR = "actor_head"
CRITIC_DIR = "critic"
SAFETENSORS_WEIGHTS = "model.safetensors"
SB3_VLM_CONFIG = "sb3_vlm_config.json"
# Key of sb3_vlm_config.json under which publish_policy records the policy's spaces and head architecture.
POLICY_METADATA_KEY = "policy"
# The settings of a training run, next to its checkpoints (`sb3-vlm train`).
RUN_CONFIG = "run_config.json"

# FTRL's two extra SFT outputs after the planner parameters (docs/compat/ftrl.md §4.3, §4.4).
VELOCITY_OUTPUTS = ("next_linear_vel", "next_angular_vel")

# Source name of the tiny offline Qwen2.5-VL.
TINY = "tiny"

# DPT pooled feature size (docs/compat/ftrl.md §1.1, §4.1).
FEATURE_DIM = 256

# History encoder input normalisation (ImageNet statistics, docs/compat/ftrl.md §1.4).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
"""Qwen's special tokens the chat path needs (a byte-level tokenizer's ids 256..262, after the 256 bytes)."""
