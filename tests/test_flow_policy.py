"""Flow expert on a real supervised checkpoint (tiny Qwen2.5-VL + DPT): training, reflow on one shared backbone,
the checkpoint layout, exact reload."""

import logging

import numpy as np
import torch as th
from _tiny_ckpt import build_tiny_checkpoint
from gymnasium import spaces

from sb3_vlm.cli import main
from sb3_vlm.flow import FitConfig, FlowHeadConfig
from sb3_vlm.flow.policy import FLOW_DIR, FlowPolicy, distill, train_flow_head
from sb3_vlm.model.extractor import VLMDPTExtractor
from sb3_vlm.sft.data import SFTDataset

IMAGE_SHAPE = (3, 56, 84)


def test_flow_expert_trains_distils_and_reloads_on_one_backbone(tmp_path, caplog):
    th.manual_seed(0)
    ckpt = build_tiny_checkpoint(tmp_path / "sft", num_params=2, use_history=False)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, *IMAGE_SHAPE), dtype=np.uint8)
    labels = np.stack([rng.choice([0.5, 1.5], 24), rng.uniform(0.3, 0.6, 24)], axis=1)
    dataset = SFTDataset(images, labels)
    extractor = VLMDPTExtractor(spaces.Box(0, 255, IMAGE_SHAPE, np.uint8), backbone=str(ckpt.path))
    head_config = FlowHeadConfig(action_dim=2, hidden=32, time_dim=16, num_steps=8)
    teacher = train_flow_head(extractor, dataset, head_config, FitConfig(steps=60, batch_size=16), out=ckpt.path)
    assert (ckpt.path / FLOW_DIR / "flow_head.safetensors").is_file()
    backbone_ptrs = [p.data_ptr() for p in teacher.extractor.backbone.parameters()]

    with caplog.at_level(logging.INFO, logger="sb3_vlm.flow"):
        student = distill(teacher, dataset, tmp_path / "student", FitConfig(steps=60, batch_size=16),
                          teacher_path=ckpt.path)  # fmt: skip
    assert "teacher loaded and frozen" in caplog.text and "student initialised from the teacher" in caplog.text
    assert "trainable (the expert" in caplog.text
    # One backbone: the student's extractor is the teacher's object, its weights the same storage.
    assert student.extractor is teacher.extractor
    assert [p.data_ptr() for p in student.extractor.backbone.parameters()] == backbone_ptrs
    assert student.head.config.num_steps == 1 and teacher.head.config.num_steps == 8

    # The written student is a whole checkpoint (FTRL parts copied from the teacher) that reloads exactly.
    assert (tmp_path / "student" / "normalization").is_dir()
    again = FlowPolicy.from_pretrained(tmp_path / "student", IMAGE_SHAPE)
    expected = student.predict(images[:6])
    th.testing.assert_close(again.predict(images[:6]), expected, rtol=0, atol=1e-6)
    assert expected.shape == (6, 2)
    # Physical units: the statistics of the checkpoint were applied.
    mean = th.as_tensor(ckpt.param_mean, dtype=th.float32)
    assert not th.allclose(expected, student.head.act(student.features(images[:6])))
    assert th.isfinite(expected).all() and (expected - mean).abs().max() < 50


def test_distill_command_writes_a_one_step_student(tmp_path):
    th.manual_seed(0)
    ckpt = build_tiny_checkpoint(tmp_path / "sft", num_params=2, use_history=False)
    rng = np.random.default_rng(1)
    dataset = SFTDataset(rng.integers(0, 256, (8, *IMAGE_SHAPE), dtype=np.uint8), rng.uniform(0.2, 1.0, (8, 2)))
    dataset.save(tmp_path / "pairs.npz")
    extractor = VLMDPTExtractor(spaces.Box(0, 255, IMAGE_SHAPE, np.uint8), backbone=str(ckpt.path))
    head_config = FlowHeadConfig(action_dim=2, hidden=16, time_dim=8, num_steps=4)
    train_flow_head(extractor, dataset, head_config, FitConfig(steps=5, batch_size=8), out=ckpt.path)
    argv = ["distill", "--teacher", str(ckpt.path), "--data", str(tmp_path / "pairs.npz"), "--out",
            str(tmp_path / "student"), "--steps", "5", "--batch-size", "8", "--save-freq", "2"]  # fmt: skip
    assert main(argv) == 0
    assert FlowPolicy.from_pretrained(tmp_path / "student", IMAGE_SHAPE).head.config.num_steps == 1
    assert (tmp_path / "student" / FLOW_DIR / "step_2" / "flow_head_config.json").is_file()  # --save-freq
    assert main([*argv, "--freeze-vision-encoder"]) == 0
    assert main([*argv, "--no-freeze-vision-encoder"]) == 2  # a clear error, nothing trained


def test_pretrain_flow_head_is_served_by_load_policy(tmp_path):
    from envs.planners import DWA_PARAMS
    from sb3_vlm.policies import load_policy

    rng = np.random.default_rng(2)
    labels = DWA_PARAMS.low + rng.uniform(0, 1, (12, 7)) * (DWA_PARAMS.high - DWA_PARAMS.low)
    pairs = SFTDataset(rng.integers(0, 256, (12, *IMAGE_SHAPE), dtype=np.uint8), labels, names=DWA_PARAMS.names)
    pairs.save(tmp_path / "pairs.npz")
    out = tmp_path / "ckpt"
    argv = ["pretrain", "--data", str(tmp_path / "pairs.npz"), "--out", str(out), "--epochs", "1", "--batch-size",
            "6", "--no-progress-bar", "--head", "flow", "--flow-steps", "3", "--flow-train-steps", "5"]  # fmt: skip
    assert main(argv) == 0
    policy = load_policy(out, params=DWA_PARAMS)
    assert policy.kind == "flow"
    images = pairs.images[:3].transpose(0, 2, 3, 1)  # the env's HWC frames
    served = policy.predict(images, velocity=np.zeros((3, 2), np.float32))
    direct = FlowPolicy.from_pretrained(out, IMAGE_SHAPE).predict(pairs.images[:3]).double().numpy()
    np.testing.assert_allclose(served, direct, rtol=1e-5, atol=1e-6)
    sft = load_policy(out, params=DWA_PARAMS, mode="sft").predict(images, velocity=np.zeros((3, 2), np.float32))
    assert not np.allclose(served, sft)  # the two heads of one checkpoint answer differently


def test_td3_from_a_flow_student_starts_at_its_deterministic_actions(tmp_path):
    """``train --vlm <distilled student>``: the TD3 actor starts at the student's one-step action from its fixed
    noise, keeps it through both save/load routes, and trains (only the correction; the expert stays frozen)."""
    from _laser_env import image_env

    from envs.planners import DWA_PARAMS
    from sb3_vlm import VLMTD3
    from sb3_vlm.td3 import VLMTD3Policy

    th.manual_seed(0)
    rng = np.random.default_rng(3)
    labels = DWA_PARAMS.low + rng.uniform(0.2, 0.8, (16, 7)) * (DWA_PARAMS.high - DWA_PARAMS.low)
    pairs = SFTDataset(rng.integers(0, 256, (16, *IMAGE_SHAPE), dtype=np.uint8), labels, names=DWA_PARAMS.names)
    pairs.save(tmp_path / "pairs.npz")
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    assert main(["pretrain", "--data", str(tmp_path / "pairs.npz"), "--out", str(teacher), "--epochs", "1",
                 "--batch-size", "8", "--no-progress-bar", "--head", "flow", "--flow-steps", "4",
                 "--flow-train-steps", "20"]) == 0  # fmt: skip
    assert main(["distill", "--teacher", str(teacher), "--data", str(tmp_path / "pairs.npz"), "--out", str(student),
                 "--steps", "20", "--batch-size", "8"]) == 0  # fmt: skip
    flow = FlowPolicy.from_pretrained(student, IMAGE_SHAPE)
    assert flow.head.config.num_steps == 1
    images = pairs.images[:6].transpose(0, 2, 3, 1)  # the env's HWC frames
    unit = np.clip(DWA_PARAMS.to_unit(flow.predict(pairs.images[:6]).double().numpy()), -1 + 1e-3, 1 - 1e-3)
    expected = DWA_PARAMS.from_unit(unit)  # the env's physical action space, the prior's clamp

    model = VLMTD3("VLMPolicy", image_env(), policy_kwargs=dict(backbone=str(student)), buffer_size=64,
                   learning_starts=8, batch_size=4, seed=0)  # fmt: skip
    np.testing.assert_allclose(model.predict(images, deterministic=True)[0], expected, rtol=1e-4, atol=1e-4)
    sft = flow.extractor.predict_parameters(th.from_numpy(pairs.images[:6])).numpy()  # what actor_prior="sft" gives
    assert not np.allclose(DWA_PARAMS.from_unit(np.clip(DWA_PARAMS.to_unit(sft), -0.999, 0.999)), expected, rtol=1e-3)
    # One frozen expert shared by the actor and its target, outside what polyak averages and the optimizer holds.
    expert = model.policy.flow_expert
    assert model.actor.mu.__dict__["flow"] is expert and model.actor_target.mu.__dict__["flow"] is expert
    assert not any(p.requires_grad for p in expert.parameters())
    owned = {id(p) for p in expert.parameters()}
    assert not owned & {id(p) for p in model.actor.parameters()}
    assert not owned & {id(p) for g in model.actor.optimizer.param_groups for p in g["params"]}

    model.save(tmp_path / "model.zip")
    loaded = VLMTD3.load(tmp_path / "model.zip", env=image_env())
    np.testing.assert_allclose(loaded.predict(images, deterministic=True)[0], expected, rtol=1e-4, atol=1e-4)
    model.policy.save_pretrained(tmp_path / "td3")
    assert (tmp_path / "td3" / FLOW_DIR).is_dir()
    again = VLMTD3Policy.from_pretrained(tmp_path / "td3", model.observation_space, model.action_space)
    np.testing.assert_allclose(again.predict(images, deterministic=True)[0], expected, rtol=1e-4, atol=1e-4)

    before = {k: v.clone() for k, v in expert.state_dict().items()}
    model.learn(total_timesteps=10)  # two updates after learning_starts=8
    assert model._n_updates > 0
    assert all(th.equal(v, before[k]) for k, v in expert.state_dict().items())
    assert not np.allclose(model.predict(images, deterministic=True)[0], expected, rtol=1e-6, atol=1e-6)
