"""Supervised stage: simulator pairs, FTRL's weighted-MSE training, the FTRL-layout checkpoint, ``sb3-vlm pretrain``."""

import json

import numpy as np
import pytest
import torch as th
from _laser_env import image_env
from gymnasium import spaces

from envs import NavBatch
from envs.nav_env import VELOCITY_HIGH, VELOCITY_LOW
from envs.planners import DWA_PARAMS
from sb3_vlm import VLMTD3, VLMDPTExtractor
from sb3_vlm._constants import VELOCITY_OUTPUTS as VELOCITY_NAMES
from sb3_vlm.cli import main
from sb3_vlm.sft.data import SFTDataset, normalization_stats, normalize, split_train_val
from sb3_vlm.sft.labels import GRID, LabelSettings, _LabelSearch, clone_slot, generate_pairs
from sb3_vlm.sft.training import (
    LOSS_WEIGHTS,
    SFTConfig,
    make_sft_extractor,
    save_sft_checkpoint,
    train_sft,
    weighted_mse,
)

WORLDS = [1, 2, 3]  # few worlds: generating them is the slow part of a first reset
LORA = dict(r=4, lora_alpha=8, lora_dropout=0.0)
IMAGE = spaces.Box(0, 255, (3, 56, 84), np.uint8)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pairs():
    return generate_pairs(
        LabelSettings(40, worlds=WORLDS, library="lhs", candidates=4, horizon=2, n_envs=4, seed=0, progress_bar=False)
    )


def synthetic(n: int, seed: int = 0) -> SFTDataset:
    """Images whose red band width and dark top rows set two of three labels (the third is noise)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, 2))
    images = np.full((n, 3, 56, 84), 128, np.uint8)
    for i, (a, b) in enumerate(x):
        images[i, 0, :, : int(8 + 70 * a)] = 255
        images[i, 2, : int(5 + 50 * b)] = 0
    labels = np.stack([0.2 + 1.8 * x[:, 0], 0.1 + 0.5 * x[:, 1], rng.integers(4, 13, n)], axis=1)
    return SFTDataset(images, labels, groups=np.arange(n) // 4, names=("a", "b", "noise"))


def test_clone_slot_replays_the_episode():
    batch = NavBatch(3, worlds=[1], noise=True)
    for slot in range(3):
        batch.reset(slot, np.random.default_rng(slot))
    for _ in range(3):
        batch.step(np.tile(DWA_PARAMS.default, (3, 1)))
    clone_slot(batch, 0, [1, 2])
    params = DWA_PARAMS.validate(DWA_PARAMS.from_unit(np.random.default_rng(1).uniform(-1, 1, (1, 7))))
    for _ in range(3):
        batch.step(np.repeat(params, 3, axis=0))
    for slot in (1, 2):
        np.testing.assert_array_equal(batch.sim.pose[slot], batch.sim.pose[0])
        np.testing.assert_array_equal(batch.sim.ranges[slot], batch.sim.ranges[0])
    with pytest.raises(ValueError, match="source slot"):
        clone_slot(batch, 0, [0, 1])


def test_generated_pairs_are_valid_and_differ_across_states(pairs):
    data, stats = pairs
    assert data.images.dtype == np.uint8 and data.images.shape == (40, 3, 56, 84)
    assert data.names == DWA_PARAMS.names + VELOCITY_NAMES and data.labels.shape == (40, 9)
    params, velocity = data.labels[:, :7], data.labels[:, 7:]
    np.testing.assert_allclose(DWA_PARAMS.validate(params), params, atol=1e-6)  # in range, ints integral
    assert np.all(velocity >= VELOCITY_LOW - 1e-6) and np.all(velocity <= VELOCITY_HIGH + 1e-6)
    # Labels come from a fixed library of 4 vectors (defaults first); states pick different ones.
    library = np.array(stats["library"])
    np.testing.assert_allclose(library[0], DWA_PARAMS.default, atol=1e-6)
    assert all(any(np.allclose(p, v, atol=1e-5) for v in library) for p in params)
    assert len(np.unique(params, axis=0)) >= 2
    # Every state of a chosen 2-step branch is labelled: 1 or 2 pairs per chosen window.
    assert sum(stats["chosen"]) <= 40 <= 2 * sum(stats["chosen"])
    assert len(np.unique(data.images.reshape(40, -1), axis=0)) > 20  # distinct scenes
    assert stats["episodes"] >= 4 and len(np.unique(data.groups)) == stats["episodes"]
    assert stats["mean_return_gain_over_default"] >= 0  # the defaults are among the candidates
    # Every simulated step of every branch is counted (each window: 4 branches x 2 steps per live episode).
    assert stats["env_steps"] >= 4 * 2 * sum(stats["chosen"])


def test_the_grid_library_varies_speed_turning_and_inflation_only():
    data, stats = generate_pairs(LabelSettings(24, worlds=[1], library="grid", horizon=2, n_envs=1, progress_bar=False))
    library = np.array(stats["library"])
    assert library.shape == (24, 7) and len(np.unique(library, axis=0)) == 24
    np.testing.assert_allclose(library[0], DWA_PARAMS.default, atol=1e-6)
    varied = [DWA_PARAMS.index(name) for name in GRID]
    fixed = [j for j in range(7) if j not in varied]
    np.testing.assert_allclose(data.labels[:, fixed], np.tile(DWA_PARAMS.default[fixed], (24, 1)), atol=1e-6)
    assert set(np.round(library[:, DWA_PARAMS.index("max_vel_x")], 3)) == set(GRID["max_vel_x"])
    with pytest.raises(ValueError, match=r"library must be one of \('lhs', 'grid'\), got 'random'"):
        LabelSettings(4, worlds=[1], library="random", n_envs=1)


def test_noise_replicas_score_each_candidate_under_fresh_noise():
    kwargs = dict(worlds=[1], library="lhs", candidates=3, horizon=2, n_envs=2, seed=0, progress_bar=False)
    one, single = generate_pairs(LabelSettings(12, noise_replicas=1, **kwargs))
    three, triple = generate_pairs(LabelSettings(12, noise_replicas=3, **kwargs))
    # Each window simulates the episode plus 3 copies of 3 candidates instead of 3 (the replay check passed inside).
    windows = sum(triple["chosen"]) + triple["skipped_ties"]
    assert triple["env_steps"] <= windows * 2 * 2 * (1 + 9) and triple["env_steps"] > 2 * single["env_steps"]
    assert three.labels.shape == one.labels.shape
    with pytest.raises(ValueError, match="LabelSettings: noise_replicas must be a positive int, got 0"):
        LabelSettings(4, noise_replicas=0, **kwargs)


@pytest.mark.parametrize("common", [False, True])
def test_common_random_numbers_give_every_candidate_of_a_replica_the_same_noise(common):
    settings = LabelSettings(4, worlds=[1], library="lhs", candidates=3, horizon=2, n_envs=2, noise_replicas=3,
                             common_random_numbers=common, progress_bar=False)  # fmt: skip
    search = _LabelSearch(settings)
    search._branch_out()
    rngs = search.batch.sim.rngs
    for g in range(settings.n_envs):
        # [R - 1, K]: the first draw of each fresh copy; replica 0 replays the episode's own noise in every candidate
        draws = np.array([rngs[d].standard_normal() for d in search.copies[g, 3:]]).reshape(2, 3)
        assert np.all(draws == draws[:, :1]) if common else len(np.unique(draws)) == draws.size
        assert len(np.unique(draws[:, 0])) == 2  # the replicas differ
    search.bar.close()


def test_soft_labels_weight_the_candidates_by_return(pairs):
    """Soft labels: a huge temperature gives the library's plain mean, a tiny one a vector of the library (the best
    one; hard labels break near-ties towards the defaults instead); the episodes (and so the images) are the same,
    since they follow the best vector either way."""
    hard, stats = pairs
    kwargs = dict(worlds=WORLDS, library="lhs", candidates=4, horizon=2, n_envs=4, seed=0, progress_bar=False)
    flat, _ = generate_pairs(LabelSettings(40, temperature=1e9, **kwargs))
    sharp, _ = generate_pairs(LabelSettings(40, temperature=1e-9, **kwargs))
    np.testing.assert_array_equal(flat.images, hard.images)
    np.testing.assert_allclose(flat.labels[:, :7], np.tile(np.mean(stats["library"], axis=0), (40, 1)), rtol=1e-5)
    library = np.array(stats["library"])
    assert all(np.abs(library - row).max(axis=1).min() < 1e-5 for row in sharp.labels[:, :7])
    assert np.mean(np.all(np.isclose(sharp.labels, hard.labels), axis=1)) > 0.5


def test_weighted_mse_normalisation_and_split():
    pred, target = th.tensor([[1.0, 2.0]]), th.tensor([[0.0, 0.0]])
    assert float(weighted_mse(pred, target, th.tensor([1.0, 0.5]))) == pytest.approx((1 + 0.5 * 4) / 2)
    labels = np.array([[1.0, 5.0], [3.0, 5.0]])
    mean, std = normalization_stats(labels)
    np.testing.assert_allclose(mean, [2, 5])
    np.testing.assert_allclose(std, [1, 0])  # population std (ddof 0), as FTRL
    np.testing.assert_allclose(normalize(labels, mean, std), [[-1, 0], [1, 0]], atol=1e-6)
    groups = np.repeat(np.arange(10), 3)
    train, val = split_train_val(30, 0.2, groups, seed=0)
    assert len(train) + len(val) == 30 and len(val) == 6
    assert not set(groups[train]) & set(groups[val])
    with pytest.raises(ValueError, match="images must be uint8"):
        SFTDataset(np.zeros((2, 56, 84, 3), np.float32), np.zeros((2, 3)))


def test_training_beats_the_mean_baseline():
    data = synthetic(128)
    th.manual_seed(0)
    extractor = make_sft_extractor((3, 56, 84), 3, feature_cache_bytes=2**27)
    config = SFTConfig(epochs=8, batch_size=16, lr=1e-3, val_fraction=0.25, progress_bar=False)
    result = train_sft(extractor, data, [1.0, 1.0, 0.75], config)
    assert result.val_mse_after < result.val_mse_before
    assert result.val_mse_after < 0.7 * result.val_mse_mean_baseline
    assert result.val_mae["a"] < 0.5 * result.val_mae_mean_baseline["a"]
    assert len(result.val_mse) == 8 and result.n_val == 32
    train, _ = split_train_val(len(data), 0.25, data.groups, seed=0)
    np.testing.assert_allclose(extractor.param_mean, data.labels[train].mean(axis=0))


@pytest.mark.parametrize("lora", [None, LORA], ids=["frozen", "lora"])
def test_checkpoint_loads_with_the_same_predictions(pairs, lora, tmp_path):
    data, _ = pairs
    th.manual_seed(0)
    extractor = make_sft_extractor((3, 56, 84), 9, lora=lora)
    config = SFTConfig(epochs=1, batch_size=16, progress_bar=False)
    result = train_sft(extractor, data, LOSS_WEIGHTS["DWA"], config)
    path = save_sft_checkpoint(extractor, tmp_path / "sft", {"metrics": result.to_dict()})

    assert (path / "regression_head" / "pytorch_model.bin").is_file()
    assert (path / "adapter_model.safetensors").is_file() == (lora is not None)
    np.testing.assert_array_equal(np.load(path / "normalization" / "param_mean.npy"), result.param_mean)
    saved = json.loads((path / "sb3_vlm_config.json").read_text())
    assert saved["base_model"] == "tiny" and saved["sft"]["metrics"]["n_val"] == result.n_val

    x = th.from_numpy(data.images[:6])
    expected = extractor.predict_parameters(x)
    loaded = VLMDPTExtractor(IMAGE, backbone=str(path))
    model = VLMTD3("VLMPolicy", image_env(), policy_kwargs=dict(backbone=str(path)), buffer_size=16)
    for other in (loaded, model.policy.features_extractor):
        th.testing.assert_close(other.predict_parameters(x), expected, rtol=1e-5, atol=1e-5)


def test_cli_end_to_end(tmp_path):
    out, pairs_file = tmp_path / "ckpt", tmp_path / "pairs.npz"
    common = ["pretrain", "--epochs", "1", "--batch-size", "8", "--no-progress-bar", "--out", str(out)]
    args = ["--samples", "16", "--worlds", "1,2,3", "--library", "lhs", "--candidates", "3", "--horizon", "1"]
    args += ["--n-envs", "4"]
    assert main([*common, *args, "--lora", "--lora-r", "2", "--save-data", str(pairs_file)]) == 0
    saved = json.loads((out / "sb3_vlm_config.json").read_text())
    sft = saved["sft"]
    assert saved["base_model"] == "tiny" and sft["data"]["pairs"] == 16 and sft["lora"]["r"] == 2
    assert sft["parameter_names"][-2:] == list(VELOCITY_NAMES)
    for key in ("val_mse_before", "val_mse_after", "val_mse_mean_baseline"):
        assert np.isfinite(sft["metrics"][key])
    assert (out / "adapter_config.json").is_file()
    ckpt = VLMDPTExtractor(IMAGE, backbone=str(out))
    assert ckpt.dpt.num_params == 9 and ckpt.param_mean.shape == (9,)

    # Retrain from the saved pairs, without LoRA, into the same directory (replaced atomically).
    assert main([*common, "--data", str(pairs_file)]) == 0
    assert not (out / "adapter_config.json").exists()
    assert main([*common, "--data", str(tmp_path / "missing.npz")]) == 2


def test_td3_from_a_supervised_checkpoint_starts_at_its_policy(pairs, tmp_path):
    """The actor of ``train --vlm <sft checkpoint>`` is the supervised policy at step 0 (not a fresh random head),
    and stays so through a save/load round trip; only its correction is polyak-averaged."""
    data, _ = pairs
    th.manual_seed(0)
    extractor = make_sft_extractor((3, 56, 84), 9)
    train_sft(extractor, data, LOSS_WEIGHTS["DWA"], SFTConfig(epochs=1, batch_size=16, progress_bar=False))
    path = save_sft_checkpoint(extractor, tmp_path / "sft")
    images = data.images[:6]
    expected = DWA_PARAMS.to_unit(extractor.predict_parameters(th.from_numpy(images)).numpy()[:, :7])
    expected = DWA_PARAMS.from_unit(np.clip(expected, -1 + 1e-3, 1 - 1e-3))  # the env's physical action space

    model = VLMTD3("VLMPolicy", image_env(), policy_kwargs=dict(backbone=str(path)), buffer_size=64, seed=0)
    actions, _ = model.predict(images, deterministic=True)
    np.testing.assert_allclose(actions, expected, rtol=1e-4, atol=1e-4)
    head = {id(p) for p in model.policy.features_extractor.parameters()}
    assert not any(id(p) in head for p in model.actor.parameters())  # polyak never touches the shared head
    fresh = VLMTD3("VLMPolicy", image_env(), policy_kwargs=dict(backbone=str(path), actor_prior=False), seed=0)
    assert not np.allclose(fresh.predict(images, deterministic=True)[0], expected, rtol=1e-2)

    model.save(tmp_path / "model.zip")
    loaded = VLMTD3.load(tmp_path / "model.zip", env=image_env())
    np.testing.assert_allclose(loaded.predict(images, deterministic=True)[0], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"n_samples": 0}, "n_samples must be a positive int, got 0"),
        ({"candidates": 1}, "candidates must be an int >= 2, got 1"),
        ({"horizon": 2.0}, "horizon must be a positive int, got 2.0"),
        ({"n_envs": True}, "n_envs must be a positive int, got True"),
        ({"temperature": 0.0}, r"temperature must be None or > 0 \(reward units\), got 0.0"),
    ],
)
def test_label_settings_check_themselves(bad, message):
    with pytest.raises(ValueError, match=f"LabelSettings: {message}"):
        LabelSettings(**{"n_samples": 4, **bad})


def test_generate_pairs_old_call_form_warns_and_gives_the_same_pairs(pairs):
    kwargs = dict(worlds=WORLDS, library="lhs", candidates=4, horizon=2, n_envs=4, seed=0, progress_bar=False)
    with pytest.deprecated_call(match="generate_pairs: .* pass a LabelSettings"):
        data, _ = generate_pairs(40, **kwargs)
    np.testing.assert_array_equal(data.labels, pairs[0].labels)
    with pytest.raises(TypeError, match="not both"):
        generate_pairs(LabelSettings(4), seed=1)
