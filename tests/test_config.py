"""VLMConfig: validation, JSON round trip, and the one config carried by extractor, policy, checkpoints, hand-off."""

import json

import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from sb3_vlm import VLMDPTExtractor, VLMTD3Policy
from sb3_vlm.model.config import VLMConfig
from sb3_vlm.serving.handoff import policy_metadata

IMAGE = spaces.Box(0, 255, (3, 56, 84), np.uint8)
ACTIONS = spaces.Box(-1, 1, (7,), np.float32)


def test_fields_have_help_and_round_trip_through_json(tmp_path):
    import dataclasses

    assert all(f.metadata.get("help") for f in dataclasses.fields(VLMConfig))
    config = VLMConfig(image_size=(56, 84), lora={"r": 4}, freeze_vlm=False, feature_cache_dtype="float16")
    assert VLMConfig.from_json(config.to_json()) == config
    assert VLMConfig.from_pretrained(config.save_pretrained(tmp_path / "vlm.json")) == config
    assert json.loads(config.to_json())["image_size"] == [56, 84]
    assert VLMConfig.build(config, seed=3) == config.replace(seed=3)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(dtype="float16"), ValueError, "dtype must be one of"),
        (dict(quantization="fp8"), ValueError, "quantization must be one of"),
        (dict(image_size=(56,)), ValueError, "image_size must be"),
        (dict(num_params=0), ValueError, "num_params must be >= 1"),
        (dict(feature_cache_bytes=1.5), TypeError, "feature_cache_bytes must be an int"),
        (dict(freeze_vlm="yes"), TypeError, "freeze_vlm must be a bool"),
        (dict(lora=[4]), TypeError, "lora must be a dict"),
    ],
)
def test_bad_values_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        VLMConfig(**kwargs)


def test_unknown_keys_are_named():
    with pytest.raises(TypeError, match=r"unknown field\(s\) \['backbon'\]"):
        VLMConfig.build(backbon="tiny")


def test_extractor_and_policy_carry_one_config(tmp_path):
    config = VLMConfig(seed=3, num_params=7)
    extractor = VLMDPTExtractor(IMAGE, config)
    assert extractor.config == config and extractor.dpt.mlp[-1].out_features == 7
    assert VLMDPTExtractor(IMAGE, seed=3, num_params=7).config == config  # flat kwargs: the same config

    policy = VLMTD3Policy(IMAGE, ACTIONS, lambda _: 1e-4, vlm=config, net_arch=[16])
    assert policy.vlm_config == config and policy.features_extractor.config == config
    assert policy_metadata(policy)["policy_kwargs"]["vlm"] == config.to_dict()
    # A directory written by save_pretrained rebuilds the same policy from its saved JSON alone.
    policy.save_pretrained(tmp_path / "policy")
    back = VLMTD3Policy.from_pretrained(tmp_path / "policy", IMAGE, ACTIONS, net_arch=[16])
    assert back.vlm_config == config.replace(backbone=str(tmp_path / "policy"))
    x = th.randint(0, 256, (2, 3, 56, 84), dtype=th.uint8)
    with th.no_grad():
        assert th.equal(back.actor(x), policy.actor(x))
