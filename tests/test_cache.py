"""Frozen-backbone feature cache: LRU under a byte budget, invalidation, steady-state hits, same losses as uncached."""

import zipfile

import numpy as np
import pytest
import torch as th
from _laser_env import image_env
from _tiny_ckpt import build_tiny_model_dir
from gymnasium import spaces
from stable_baselines3.common.logger import configure
from stable_baselines3.common.utils import set_random_seed

from sb3_vlm import VLMTD3, VLMDPTExtractor
from sb3_vlm.model.cache import ENTRY_OVERHEAD_BYTES, FeatureCache, content_keys, to_storage

IMAGE = spaces.Box(0, 255, (3, 56, 84), np.uint8)
VELOCITY = spaces.Box(np.array([-0.5, -3.14], np.float32), np.array([2.0, 3.14], np.float32))
DICT = spaces.Dict({"image": IMAGE, "velocity": VELOCITY})
MIB = 2**20


def images(batch: int, seed: int = 0) -> th.Tensor:
    return th.randint(0, 256, (batch, 3, 56, 84), dtype=th.uint8, generator=th.Generator().manual_seed(seed))


class PassCounter:
    """Counts the images that go through a backbone (forward pre-hook)."""

    def __init__(self, backbone: th.nn.Module):
        self.images = 0
        self.handle = backbone.register_forward_pre_hook(self._count)

    def _count(self, module, args):
        self.images += args[0].shape[0]

    def remove(self) -> None:
        self.handle.remove()


def model_with_replay(policy_kwargs: dict, transitions: int = 24, batch_size: int = 8) -> VLMTD3:
    """A VLMTD3 (seed 0) whose replay buffer holds ``transitions`` steps of one image chain (``transitions + 1``
    distinct images), the same for every call."""
    model = VLMTD3(
        "VLMPolicy",
        image_env(),
        policy_kwargs={"backbone": "tiny", "freeze_vlm": True, **policy_kwargs},
        actor_lr=1e-3,
        critic_lr=1e-3,
        batch_size=batch_size,
        buffer_size=transitions,
        learning_starts=0,
        seed=0,
    )
    model.set_logger(configure(None, []))
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (transitions + 1, 1, 3, 56, 84), dtype=np.uint8)
    actions = rng.uniform(-1, 1, (transitions, 1, 7)).astype(np.float32)
    rewards = rng.normal(size=(transitions, 1)).astype(np.float32)
    for t in range(transitions):
        model.replay_buffer.add(frames[t], frames[t + 1], actions[t], rewards[t], np.array([t % 10 == 9]), [{}])
    return model


def train_losses(model: VLMTD3, steps: int) -> list[float]:
    """Critic and actor losses of ``steps`` single gradient steps, from a fixed RNG state."""
    set_random_seed(0)
    losses = []
    for _ in range(steps):
        model.train(gradient_steps=1, batch_size=model.batch_size)
        logged = model.logger.name_to_value
        losses += [logged["train/critic_loss"], logged.get("train/actor_loss", np.nan)]
        model.logger.dump()
    return losses


@pytest.fixture(scope="module")
def uncached_losses():
    """Losses of uncached training per ``freeze_dpt`` (computed once)."""
    return {freeze_dpt: train_losses(model_with_replay(dict(freeze_dpt=freeze_dpt)), 3) for freeze_dpt in (False, True)}


@pytest.mark.parametrize(
    "policy_kwargs,steps,rtol",
    [
        # float32 caches: only the backbone's batch composition differs (misses run as a sub-batch), ~1e-6.
        (dict(), 3, 1e-4),  # default: hidden states
        (dict(freeze_dpt=True), 3, 1e-4),  # pooled features
        # float16 hidden states round the features by ~1e-3; Adam amplifies that over steps, so only two steps.
        (dict(feature_cache_dtype="float16"), 2, 1e-2),
    ],
)
def test_same_losses_with_and_without_cache(uncached_losses, policy_kwargs, steps, rtol):
    freeze_dpt = policy_kwargs.get("freeze_dpt", False)
    cached = model_with_replay({**policy_kwargs, "feature_cache_bytes": 64 * MIB})
    assert cached.policy.features_extractor.cache_mode == ("features" if freeze_dpt else "hidden")
    np.testing.assert_allclose(train_losses(cached, steps), uncached_losses[freeze_dpt][: 2 * steps], rtol=rtol)
    stats = cached.policy.features_extractor.feature_cache.stats()
    assert stats.hits > 0 and stats.misses <= 25  # each of the 25 distinct images passed the backbone at most once


def test_steady_state_hits_and_no_backbone_pass():
    model = model_with_replay(dict(feature_cache_bytes=64 * MIB, feature_cache_dtype="float16"))
    buffer = model.replay_buffer
    # Rollouts see every observation once (predict gets float images from SB3's preprocessing; replay gives uint8).
    model.predict(np.concatenate([buffer.observations, buffer.next_observations[-1:]])[:, 0])
    extractor = model.policy.features_extractor
    assert len(extractor.feature_cache) == 25
    counter = PassCounter(extractor.backbone)
    model.train(gradient_steps=4, batch_size=8)
    counter.remove()
    assert counter.images == 0
    logged = model.logger.name_to_value
    assert logged["train/cache_hit_rate"] == 1.0 and logged["train/cache_misses"] == 25
    assert logged["train/cache_entries"] == 25 and 0 < logged["train/cache_bytes"] <= 64 * MIB


def test_without_cache_two_backbone_passes_per_sample():
    model = model_with_replay({})
    counter = PassCounter(model.policy.features_extractor.backbone)
    model.train(gradient_steps=3, batch_size=8)
    counter.remove()
    assert counter.images == 2 * 3 * 8
    assert "train/cache_hit_rate" not in model.logger.name_to_value


def test_lru_eviction_under_a_byte_budget():
    probe = VLMDPTExtractor(IMAGE, feature_cache_bytes=MIB)
    probe(images(1))
    entry = probe.feature_cache.stats().bytes  # [4, 8 tokens, 128] float32 + overhead
    assert entry == 4 * 8 * 128 * 4 + ENTRY_OVERHEAD_BYTES

    extractor = VLMDPTExtractor(IMAGE, feature_cache_bytes=3 * entry + entry // 2)
    cache = extractor.feature_cache
    counter = PassCounter(extractor.backbone)
    a, b, c, d = images(4).split(1)
    with th.no_grad():
        extractor(th.cat([a, b, c]))
        extractor(a)  # hit: a becomes the most recently used
        extractor(d)  # over budget: evicts b, the least recently used
        assert counter.images == 4
        stats = cache.stats()
        assert (stats.entries, stats.bytes, stats.evictions, stats.hits, stats.misses) == (3, 3 * entry, 1, 1, 4)
        keys = content_keys(th.cat([a, b, c, d]))
        assert [k in cache for k in keys] == [True, False, True, True]
        extractor(b)
        assert counter.images == 5 and cache.stats().bytes <= cache.max_bytes
        assert [k in cache for k in keys] == [True, True, False, True]  # c was the oldest now

    tight = VLMDPTExtractor(IMAGE, feature_cache_bytes=entry - 1)  # one entry exceeds the budget: never stored
    tight.load_state_dict(extractor.state_dict())
    with th.no_grad():
        th.testing.assert_close(tight(a), extractor(a), rtol=1e-4, atol=1e-4)  # a was computed in a batch of 3
    assert len(tight.feature_cache) == 0 and tight.feature_cache.stats().misses == 1


def test_batch_duplicates_pass_once_and_float_inputs_share_keys():
    extractor = VLMDPTExtractor(IMAGE, feature_cache_bytes=MIB)
    counter = PassCounter(extractor.backbone)
    x = images(3)
    with th.no_grad():
        first = extractor(th.cat([x, x[:1]]))
        again = extractor(x.float() / 255)  # SB3's preprocessing of the same uint8 images
        other = extractor((x.float() + 0.5) / 256)  # not uint8 / 255: keyed by its float bytes
    assert counter.images == 3 + 3
    assert th.equal(first[:3], again) and th.equal(first[0], first[3])
    assert not th.allclose(other, again)


def test_velocity_is_part_of_the_key():
    extractor = VLMDPTExtractor(DICT, feature_cache_bytes=MIB)
    x = images(1)
    with th.no_grad():
        for v in (0.1, 0.2, 0.1):
            extractor({"image": x, "velocity": th.tensor([[v, 0.0]])})
    stats = extractor.feature_cache.stats()
    assert (stats.misses, stats.hits, stats.entries) == (2, 1, 2)


def test_prompts_of_different_lengths_are_stored_unpadded(tmp_path):
    model_dir = build_tiny_model_dir(tmp_path / "qwen")  # with a tokenizer: the velocity is in the prompt
    cached = VLMDPTExtractor(DICT, backbone=model_dir, feature_cache_bytes=64 * MIB)
    plain = VLMDPTExtractor(DICT, backbone=model_dir)
    plain.load_state_dict(cached.state_dict())
    x, velocity = images(2), th.tensor([[0.5, 0.1], [-0.5, 0.1]])  # the minus sign makes one prompt longer
    with th.no_grad():
        batch = cached({"image": x, "velocity": velocity})
        th.testing.assert_close(batch, plain({"image": x, "velocity": velocity}), atol=1e-5, rtol=1e-5)
        stored = [cached.feature_cache.get(k) for k in content_keys(x, velocity)]
        assert stored[0].shape[1] + 1 == stored[1].shape[1]  # [4, L_i, H] without padding
        alone = cached({"image": x[1:], "velocity": velocity[1:]})
        th.testing.assert_close(alone, plain({"image": x[1:], "velocity": velocity[1:]}), atol=1e-4, rtol=1e-4)
    assert cached.feature_cache.stats().hits == 1


def test_invalidation_when_cached_side_parameters_change():
    x = images(4)
    # Fully frozen: the pooled features are cached, so the DPT head is on the cached side.
    frozen = VLMDPTExtractor(IMAGE, freeze_dpt=True, feature_cache_bytes=MIB)
    reference = VLMDPTExtractor(IMAGE, freeze_dpt=True)
    assert frozen.cache_mode == "features"
    frozen(x), frozen(x)
    assert frozen.feature_cache.stats()[:4] == (4, 4, 0, 0)
    with th.no_grad():
        frozen.dpt.projections[0][0].weight.mul_(1.5)
    reference.load_state_dict(frozen.state_dict())
    assert th.equal(frozen(x), reference(x))
    assert frozen.feature_cache.stats().invalidations == 1 and frozen.feature_cache.stats().misses == 8
    frozen.load_state_dict(reference.state_dict())  # copy_ bumps the version counters even with equal values
    frozen(x)
    assert frozen.feature_cache.stats().invalidations == 2

    # DPT trains: hidden states are cached; DPT updates keep them, backbone changes do not.
    hidden = VLMDPTExtractor(IMAGE, feature_cache_bytes=MIB)
    reference = VLMDPTExtractor(IMAGE)
    assert hidden.cache_mode == "hidden"
    hidden.train()
    optimizer = th.optim.SGD(hidden.dpt.parameters(), lr=0.1)
    hidden(x).square().sum().backward()
    optimizer.step()
    hidden.eval()
    reference.load_state_dict(hidden.state_dict())
    with th.no_grad():
        assert th.equal(hidden(x), reference(x))
        assert hidden.feature_cache.stats()[:4] == (4, 4, 0, 0)
        next(hidden.backbone.parameters()).add_(0.01)
        reference.load_state_dict(hidden.state_dict())
        assert th.equal(hidden(x), reference(x))
    assert hidden.feature_cache.stats()[:4] == (4, 8, 0, 1)


def test_cache_is_inactive_while_the_vlm_trains():
    lora = dict(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    with pytest.warns(UserWarning, match="inactive while the VLM trains"):
        extractor = VLMDPTExtractor(IMAGE, freeze_vlm=False, lora=lora, feature_cache_bytes=MIB)
    assert extractor.cache_mode is None
    extractor(images(2))
    assert len(extractor.feature_cache) == 0


def test_learn_with_cache_and_save_load_keep_only_the_setting(tmp_path):
    kwargs = dict(batch_size=4, learning_starts=4, buffer_size=100, seed=0)
    model = VLMTD3("VLMPolicy", image_env(), policy_kwargs=dict(feature_cache_bytes=16 * MIB), **kwargs)
    model.learn(12)
    stats = model.policy.features_extractor.feature_cache.stats()
    assert stats.hits > stats.misses > 0
    model.save(tmp_path / "model.zip")
    with zipfile.ZipFile(tmp_path / "model.zip") as archive, archive.open("policy.pth") as file:
        saved = th.load(file, weights_only=True)
    assert set(saved) == set(model.policy.state_dict())
    loaded = VLMTD3.load(tmp_path / "model.zip", env=image_env())
    cache = loaded.policy.features_extractor.feature_cache
    assert cache is not None and cache.max_bytes == 16 * MIB and len(cache) == 0


def test_feature_cache_unit_behaviour():
    cache = FeatureCache(3 * (64 + ENTRY_OVERHEAD_BYTES))
    for i in range(4):
        cache.put(bytes([i]), th.zeros(16))
    assert [bytes([i]) in cache for i in range(4)] == [False, True, True, True]
    assert cache.sync("v1") is False and len(cache) == 0  # first version: cleared, not counted
    cache.put(b"x", th.zeros(16))
    assert cache.sync("v1") is False and cache.sync("v2") is True and cache.stats().invalidations == 1
    with pytest.raises(ValueError, match="max_bytes must be > 0, got 0"):
        FeatureCache(0)
    with pytest.raises(TypeError, match="max_bytes must be an int, got float"):
        FeatureCache(1e6)


def test_float16_overflow_falls_back_to_float32():
    values = th.tensor([1.0, 1e5])
    with pytest.warns(UserWarning, match="overflow"):
        stored = to_storage(values, th.float16)
    assert stored.dtype == th.float32 and th.equal(stored, values)
    assert to_storage(th.tensor([1.0, 2.0]), th.float16).dtype == th.float16


def test_rejects_bad_cache_arguments():
    with pytest.raises(TypeError, match="feature_cache_bytes must be an int"):
        VLMDPTExtractor(IMAGE, feature_cache_bytes=1.5)
    with pytest.raises(ValueError, match="feature_cache_bytes must be >= 0"):
        VLMDPTExtractor(IMAGE, feature_cache_bytes=-1)
    with pytest.raises(ValueError, match="feature_cache_dtype must be one of"):
        VLMDPTExtractor(IMAGE, feature_cache_bytes=MIB, feature_cache_dtype="int8")
