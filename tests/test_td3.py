"""VLMTD3 + VLMTD3Policy: training, one shared backbone, zip without backbone, polyak, learning rates, NaN guard."""

import zipfile

import numpy as np
import pytest
import torch as th
from _laser_env import dict_image_env, image_env
from gymnasium import spaces
from peft import PeftModel
from stable_baselines3 import TD3
from stable_baselines3.td3.policies import TD3Policy

from sb3_vlm import VLMTD3, VLMDPTExtractor, VLMTD3Policy
from sb3_vlm.formats.checkpoint import CheckpointError
from sb3_vlm.model.backbone import build_tiny_model

LORA = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)


def make_model(env=None, policy_kwargs=None, **kwargs) -> VLMTD3:
    defaults = dict(actor_lr=1e-4, critic_lr=3e-4, batch_size=8, learning_starts=16, buffer_size=400, seed=0)
    return VLMTD3(
        "VLMPolicy",
        env or image_env(),
        policy_kwargs={"backbone": "tiny", "freeze_vlm": True, **(policy_kwargs or {})},
        **{**defaults, **kwargs},
    )


def snapshot(module: th.nn.Module) -> dict[str, th.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict[str, th.Tensor], module: th.nn.Module) -> bool:
    state = module.state_dict()
    return any(not th.equal(v, state[k]) for k, v in before.items())


def policy_zip_state(path) -> dict[str, th.Tensor]:
    with zipfile.ZipFile(path) as archive, archive.open("policy.pth") as file:
        return th.load(file, weights_only=True)


@pytest.fixture(scope="module")
def filled():
    """A frozen-backbone model with a filled replay buffer, for direct ``train()`` calls."""
    model = make_model(tau=0.5, batch_size=4)
    model.learn(40)
    return model


def test_frozen_backbone_training(tmp_path):
    model = make_model()
    backbone, dpt = snapshot(model.policy.features_extractor.backbone), snapshot(model.policy.features_extractor.dpt)
    actor_head, target_head = snapshot(model.actor.mu), snapshot(model.actor_target.mu)
    model.learn(120)
    assert not changed(backbone, model.policy.features_extractor.backbone)  # bit-identical
    assert changed(dpt, model.policy.features_extractor.dpt) and changed(actor_head, model.actor.mu)
    assert changed(target_head, model.actor_target.mu)
    assert not th.equal(model.actor.mu[0].weight, model.actor_target.mu[0].weight)
    logged = model.logger.name_to_value
    assert np.isfinite(logged["train/actor_loss"]) and np.isfinite(logged["train/critic_loss"])
    assert logged["train/skipped_updates"] == 0 and model.skipped_updates == 0


def test_lora_training_saves_a_peft_adapter(tmp_path):
    model = make_model(dict_image_env(), policy_kwargs=dict(freeze_vlm=False, lora=LORA))
    backbone = model.policy.features_extractor.backbone
    lora_names = backbone.lora_parameter_names()
    before = snapshot(backbone)
    model.learn(120)
    after = backbone.state_dict()
    assert all(th.equal(before[k], after[k]) for k in before if "lora_" not in k)
    assert any(not th.equal(before[k], after[k]) for k in lora_names if "lora_B" in k)

    path = model.policy.save_pretrained(tmp_path / "policy")
    assert {p.name for p in path.iterdir()} >= {"adapter_config.json", "adapter_model.safetensors", "regression_head"}
    assert (path / "actor_head" / "model.safetensors").is_file() and (path / "critic" / "model.safetensors").is_file()
    reloaded = PeftModel.from_pretrained(build_tiny_model(), path)
    reloaded_state = dict(reloaded.named_parameters())
    for name in lora_names:
        assert th.equal(reloaded_state[name.removeprefix("model.")], after[name])


def test_one_backbone_in_memory_and_none_in_the_zip(tmp_path):
    model = make_model()
    policy = model.policy
    nets = (policy.actor, policy.actor_target, policy.critic, policy.critic_target)
    assert all(net.features_extractor is policy.features_extractor for net in nets)
    n_tensors = len(list(policy.features_extractor.backbone.parameters()))
    pointers = {
        p.data_ptr() for net in nets for n, p in net.named_parameters(remove_duplicate=False) if ".backbone." in n
    }
    assert len(pointers) == n_tensors  # 4 networks, 1 set of backbone tensors
    model.save(tmp_path / "vlm.zip")
    saved = policy_zip_state(tmp_path / "vlm.zip")
    assert not [k for k in saved if ".backbone." in k]
    assert [k for k in saved if k.startswith("features_extractor.dpt.")]

    stock = TD3("CnnPolicy", image_env(), buffer_size=10, policy_kwargs=dict(features_extractor_class=VLMDPTExtractor))
    extractors = [stock.actor, stock.actor_target, stock.critic, stock.critic_target]
    first = [next(net.features_extractor.backbone.parameters()).data_ptr() for net in extractors]
    assert len(set(first)) == 4  # four copies of the backbone
    stock.save(tmp_path / "stock.zip")
    n_backbone = len(policy.features_extractor.backbone.state_dict())
    assert len([k for k in policy_zip_state(tmp_path / "stock.zip") if ".backbone." in k]) == 4 * n_backbone


def test_save_load_round_trip_keeps_learning_rates_distinct(tmp_path):
    model = make_model(dict_image_env(), policy_kwargs=dict(freeze_vlm=False, lora=LORA))
    model.learn(30)
    model.learn(10, reset_num_timesteps=False)
    assert [g["lr"] for g in model.actor.optimizer.param_groups] == [1e-4]
    assert [g["lr"] for g in model.critic.optimizer.param_groups] == [3e-4]
    model.save(tmp_path / "model.zip")
    saved = policy_zip_state(tmp_path / "model.zip")
    assert [k for k in saved if "lora_" in k] and not [k for k in saved if ".backbone." in k and "lora_" not in k]

    loaded = VLMTD3.load(tmp_path / "model.zip", env=dict_image_env())
    obs = model.env.reset()
    np.testing.assert_array_equal(model.predict(obs)[0], loaded.predict(obs)[0])
    for key, value in model.policy.state_dict().items():
        assert th.equal(value, loaded.policy.state_dict()[key]), key
    loaded.learn(10, reset_num_timesteps=False)
    assert [g["lr"] for g in loaded.actor.optimizer.param_groups] == [1e-4]
    assert [g["lr"] for g in loaded.critic.optimizer.param_groups] == [3e-4]
    assert loaded.logger.name_to_value["train/actor_learning_rate"] == 1e-4


def test_learning_rate_schedules():
    model = make_model(actor_lr=lambda progress: 1e-3 * progress, critic_lr=2e-4)
    model.learn(20)
    model._current_progress_remaining = 0.25
    model.train(gradient_steps=1, batch_size=4)
    assert model.actor.optimizer.param_groups[0]["lr"] == pytest.approx(2.5e-4)
    assert model.critic.optimizer.param_groups[0]["lr"] == 2e-4


def test_polyak_never_touches_the_shared_backbone(filled):
    # tau=0.5: averaging the backbone with itself would scale it by 0.75 per update
    backbone = snapshot(filled.policy.features_extractor.backbone)
    critic_target = snapshot(filled.critic_target)
    filled.train(gradient_steps=40, batch_size=4)
    assert not changed(backbone, filled.policy.features_extractor.backbone)
    assert changed({k: v for k, v in critic_target.items() if "features_extractor" not in k}, filled.critic_target)


def test_backbone_runs_once_on_obs_and_once_on_next_obs_per_step(filled):
    calls = []
    handle = filled.policy.features_extractor.backbone.register_forward_hook(lambda *_: calls.append(1))
    filled.train(gradient_steps=3, batch_size=4)
    handle.remove()
    assert len(calls) == 6


def test_nan_updates_are_skipped_and_counted(filled):
    buffer = filled.replay_buffer
    rewards = buffer.rewards.copy()
    buffer.rewards[:] = np.nan
    critic_heads = {k: v for k, v in snapshot(filled.critic).items() if not k.startswith("features_extractor.")}
    skipped = filled.skipped_updates  # (the actor steps of this call may move the shared DPT: not a critic head)
    filled._n_updates = 0  # policy_delay 2: steps 2 and 4 update the actor
    filled.train(gradient_steps=4, batch_size=4)
    assert not changed(critic_heads, filled.critic)
    assert filled.skipped_updates == skipped + 4
    assert filled.logger.name_to_value["train/skipped_updates"] == skipped + 4
    buffer.rewards[:] = rewards

    actor_head = snapshot(filled.actor.mu)
    handle = filled.actor.mu[0].weight.register_hook(lambda grad: grad * float("inf"))
    filled.train(gradient_steps=2, batch_size=4)
    handle.remove()
    assert not changed(actor_head, filled.actor.mu)
    assert filled.skipped_updates == skipped + 5


def test_max_grad_norm_bounds_the_step():
    model = make_model(
        policy_kwargs=dict(optimizer_class=th.optim.SGD), max_grad_norm=1e-3, critic_lr=0.1, batch_size=4
    )
    model.learn(20)
    before = [p.detach().clone() for p in model.critic.parameters()]
    model.train(gradient_steps=1, batch_size=4)
    step = th.cat([(p.detach() - b).flatten() for p, b in zip(model.critic.parameters(), before, strict=True)])
    assert 0 < step.norm() <= 0.1 * 1e-3 * (1 + 1e-4)


def test_max_grad_norm_never_scales_gradients_up(monkeypatch):
    # torch 2.6-2.8's clip_grads_with_norm_ scales by max_norm / total_norm even when that is > 1.
    def unclamped(parameters, max_norm, total_norm, foreach=None):
        for p in parameters:
            if p.grad is not None:
                p.grad.mul_(max_norm / (total_norm + 1e-6))

    monkeypatch.setattr(th.nn.utils, "clip_grads_with_norm_", unclamped)
    model = make_model(policy_kwargs=dict(optimizer_class=th.optim.SGD), max_grad_norm=1e6, critic_lr=1e-3)
    model.learn(20)
    before = [p.detach().clone() for p in model.critic.parameters()]
    model.train(gradient_steps=1, batch_size=4)
    step = th.cat([(p.detach() - b).flatten() for p, b in zip(model.critic.parameters(), before, strict=True)])
    assert 0 < step.norm() < 1.0  # an unclipped SGD step, not one scaled towards 1e6 * lr


def test_policy_save_pretrained_and_from_pretrained(tmp_path):
    model = make_model()
    model.learn(20)
    path = model.policy.save_pretrained(tmp_path / "policy")
    policy = VLMTD3Policy.from_pretrained(path, model.observation_space, model.action_space)
    obs = th.as_tensor(model.observation_space.sample()[None])
    action = th.zeros(1, model.action_space.shape[0])
    with th.no_grad():
        assert th.equal(policy.actor(obs), model.actor(obs))
        assert th.equal(th.cat(policy.critic(obs, action)), th.cat(model.critic(obs, action)))
    with pytest.raises(
        CheckpointError, match=r"actor_head: key 'mu.0.weight' expected shape \(3, 256\), got \(7, 256\)"
    ):
        VLMTD3Policy.from_pretrained(path, model.observation_space, spaces.Box(-1, 1, (3,), np.float32))


def test_rejects_other_policies():
    with pytest.raises(ValueError, match="Policy MlpPolicy unknown"):
        VLMTD3("MlpPolicy", image_env())
    with pytest.raises(TypeError, match="needs a VLMTD3Policy, got TD3Policy"):
        VLMTD3(TD3Policy, image_env(), policy_kwargs=dict(features_extractor_class=VLMDPTExtractor))
    with pytest.raises(ValueError, match="max_grad_norm must be > 0"):
        make_model(max_grad_norm=0.0)
    with pytest.raises(ValueError, match=r"net_arch keys must be among .*got \['bad', 'pi'\]"):
        make_model(policy_kwargs=dict(net_arch=dict(pi=[], bad=[1])))


def test_stock_sb3_td3_with_the_vlm_policy_keeps_the_backbone(tmp_path):
    # rl_zoo3's `--algo td3` runs SB3's own TD3.train, which polyak-averages critic.parameters() and
    # actor.parameters(): those list heads only, so the shared backbone is never averaged with itself.
    model = TD3(
        VLMTD3Policy,
        image_env(),
        policy_kwargs={"backbone": "tiny"},
        tau=0.5,
        batch_size=4,
        learning_starts=8,
        buffer_size=100,
        seed=0,
    )
    extractor = model.policy.features_extractor
    backbone, dpt = snapshot(extractor.backbone), snapshot(extractor.dpt)
    head = snapshot(model.critic_target)
    model.learn(24)
    assert not changed(backbone, extractor.backbone) and changed(dpt, extractor.dpt)
    assert changed({k: v for k, v in head.items() if not k.startswith("features_extractor.")}, model.critic_target)
    assert {id(p) for p in model.critic.parameters()}.isdisjoint(id(p) for p in extractor.parameters())
    model.save(tmp_path / "stock.zip")
    assert len(policy_zip_state(tmp_path / "stock.zip")) == len(model.policy.state_dict())


@pytest.mark.parametrize("freeze_vlm", [True, False])
def test_trains_on_the_real_costmap_env(freeze_vlm):
    import gymnasium as gym

    import envs  # noqa: F401  (registers BarnNavCostmap-v0)

    policy_kwargs = {"freeze_vlm": freeze_vlm, **({} if freeze_vlm else {"lora": LORA})}
    model = make_model(gym.make("BarnNavCostmap-v0", max_steps=40), policy_kwargs, learning_starts=32)
    backbone = model.policy.features_extractor.backbone
    base = {k: v for k, v in snapshot(backbone).items() if "lora_" not in k}
    lora = {k: v for k, v in snapshot(backbone).items() if "lora_B" in k}
    model.learn(96)
    assert model.num_timesteps == 96 and model.replay_buffer.observations.dtype == np.uint8
    assert not changed(base, backbone)  # the base VLM never trains
    assert changed(lora, backbone) != freeze_vlm  # LoRA trains exactly when the VLM is not frozen


def _mean_distance(model: VLMTD3, target: np.ndarray) -> float:
    """Mean |actor(s) - target| over the replayed observations."""
    buffer = model.replay_buffer
    with th.no_grad():
        actions = model.actor(th.as_tensor(buffer.observations[: buffer.size(), 0]))
    return float((actions - th.as_tensor(target)).abs().mean())


def test_bc_alpha_keeps_the_actor_near_the_replayed_actions():
    """TD3+BC: with a small alpha the actor's updates pull it towards the replayed actions; plain TD3's do not."""
    distances = {}
    for bc_alpha in (None, 1e-4):
        kwargs = dict(actor_lr=1e-4, policy_delay=1, batch_size=8, learning_starts=100)
        model = make_model(policy_kwargs=dict(freeze_dpt=True), bc_alpha=bc_alpha, **kwargs)
        model.learn(24)  # fills the buffer; no update yet
        target = np.full(model.action_space.shape, 0.5, dtype=np.float32)
        model.replay_buffer.actions[: model.replay_buffer.size()] = target  # every replayed action: 0.5
        start = _mean_distance(model, target)
        model.train(gradient_steps=60, batch_size=8)
        distances[bc_alpha] = (start, _mean_distance(model, target))
    start, after = distances[1e-4]
    assert after < 0.7 * start, distances
    assert model.logger.name_to_value["train/bc_loss"] > 0
    assert distances[None][1] > 1.4 * after, distances
    with pytest.raises(ValueError, match="bc_alpha must be > 0"):
        make_model(bc_alpha=0.0)
