"""FastTD3 and the batched critic: stock SB3 TD3's update to float rounding, SB3's state-dict layout, save/load."""

import numpy as np
import pytest
import torch as th
from _laser_env import image_env, laser_env
from stable_baselines3 import TD3
from stable_baselines3.common.logger import configure
from stable_baselines3.common.policies import ContinuousCritic
from stable_baselines3.common.torch_layers import create_mlp
from torch import nn

from sb3_vlm import FastTD3
from sb3_vlm.td3.batched import BatchedCritic, BatchedMLP, BatchedTD3Policy

COMMON = dict(batch_size=16, buffer_size=200, learning_starts=0, gamma=0.95, seed=0, learning_rate=1e-3)


def fill(model, n: int = 120, seed: int = 0) -> None:
    """The same seeded transitions into the model's replay buffer."""
    rng = np.random.default_rng(seed)
    space = model.observation_space
    for t in range(n):
        if space.dtype == np.uint8:
            obs, next_obs = (rng.integers(0, 256, (1, *space.shape), dtype=np.uint8) for _ in range(2))
        else:
            obs, next_obs = (rng.uniform(-1, 1, (1, *space.shape)).astype(np.float32) for _ in range(2))
        action = rng.uniform(-1, 1, (1, 7)).astype(np.float32)
        done = np.array([t % 30 == 29])
        model.replay_buffer.add(obs, next_obs, action, rng.normal(size=1).astype(np.float32), done, [{}])


def trained_pair(policy: str, env=None, stock_policy: str = "MlpPolicy", transitions: int = 120, **kwargs):
    """Stock TD3 and FastTD3 from the same weights and replay data, after 10 gradient steps each with the same
    sampled batches and target noise."""
    env = env or laser_env()
    stock = TD3(stock_policy, env, **{**COMMON, **kwargs})
    ours = FastTD3(policy, env, **{**COMMON, **kwargs})
    ours.policy.load_state_dict(stock.policy.state_dict())
    for model in (stock, ours):
        model.set_logger(configure(None, []))
        fill(model, transitions)
        np.random.seed(1)  # replay sampling
        th.manual_seed(1)  # target policy noise
        model.train(gradient_steps=10, batch_size=model.batch_size)
    return stock, ours


def assert_same_policy(stock, ours) -> None:
    expected, got = stock.policy.state_dict(), ours.policy.state_dict()
    assert list(got) == list(expected)
    for key, value in expected.items():
        th.testing.assert_close(got[key], value, rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.parametrize("policy", ["MlpPolicy", "BatchedMlpPolicy"])
@pytest.mark.parametrize(
    "policy_kwargs",
    [
        dict(net_arch=[32, 32]),
        dict(net_arch=dict(pi=[16], qf=[24, 8]), activation_fn=nn.Tanh, n_critics=3),
        dict(net_arch=[16], n_critics=1, share_features_extractor=True),
    ],
)
def test_update_matches_stock_td3(policy, policy_kwargs):
    stock, ours = trained_pair(policy, policy_kwargs=policy_kwargs, n_steps=4, policy_delay=2)
    assert_same_policy(stock, ours)
    untrained = FastTD3(policy, laser_env(), policy_kwargs=policy_kwargs, **COMMON).policy.state_dict()
    assert not th.equal(ours.policy.state_dict()["actor.mu.0.weight"], untrained["actor.mu.0.weight"])
    for name in ("train/critic_loss", "train/actor_loss"):
        assert ours.logger.name_to_value[name] == pytest.approx(stock.logger.name_to_value[name], rel=1e-4)


@pytest.mark.parametrize("share_features_extractor", [False, True])
def test_update_matches_stock_td3_on_images(share_features_extractor):
    """A CNN extractor, also one shared by actor and critic (trained by the actor loss, averaged twice per update)."""
    policy_kwargs = dict(
        net_arch=[16], features_extractor_kwargs=dict(features_dim=8), share_features_extractor=share_features_extractor
    )
    stock, ours = trained_pair(
        "CnnPolicy", image_env(), "CnnPolicy", transitions=40, policy_kwargs=policy_kwargs, batch_size=8
    )
    assert_same_policy(stock, ours)


def test_fused_adam_is_the_default_and_can_be_declined():
    assert FastTD3("MlpPolicy", laser_env(), **COMMON).critic.optimizer.defaults["fused"] is True
    declined = FastTD3("MlpPolicy", laser_env(), policy_kwargs=dict(optimizer_kwargs=dict(fused=False)), **COMMON)
    assert declined.critic.optimizer.defaults["fused"] is False
    sgd = FastTD3("MlpPolicy", laser_env(), policy_kwargs=dict(optimizer_class=th.optim.SGD), **COMMON)
    assert "fused" not in sgd.policy.optimizer_kwargs


def test_actor_step_leaves_the_critic_gradients_alone():
    model = FastTD3("MlpPolicy", laser_env(), policy_delay=1, **COMMON)
    model.set_logger(configure(None, []))
    fill(model)
    grads = []
    model.critic.optimizer.step = lambda: grads.append([p.grad.clone() for p in model.critic.parameters()])
    model.train(gradient_steps=1, batch_size=16)
    # After the actor step the critic's gradients are still those of the critic loss.
    assert all(th.equal(g, p.grad) for g, p in zip(grads[0], model.critic.parameters(), strict=True))


@pytest.mark.parametrize("layer_norm", [False, True])
@pytest.mark.parametrize("activation_fn", [nn.ReLU, nn.Tanh])
def test_batched_mlp_is_n_sequentials(layer_norm, activation_fn):
    """Same numbers as ``n`` ``nn.Sequential`` (Linear, [LayerNorm,] act, ...) holding its ``sequential_state``."""
    batched = BatchedMLP(3, 10, [8, 6], activation_fn, layer_norm=layer_norm)
    with th.no_grad():
        for p in batched.parameters():
            p.add_(th.randn_like(p) * 0.1)  # LayerNorm gains and shifts away from 1 and 0
    state = batched.sequential_state()
    x = th.randn(5, 10)
    out = batched(x)
    for i in range(3):
        layers = create_mlp(10, 1, [8, 6], activation_fn)
        if layer_norm:
            layers = [layers[0], nn.LayerNorm(8), layers[1], layers[2], nn.LayerNorm(6), layers[3], layers[4]]
        reference = nn.Sequential(*layers)
        reference.load_state_dict({k[len(f"{i}.") :]: v for k, v in state.items() if k.startswith(f"{i}.")})
        th.testing.assert_close(out[i], reference(x))
        th.testing.assert_close(batched.member(i, x[:, :7], x[:, 7:]), reference(x))
    fresh = BatchedMLP(3, 10, [8, 6], activation_fn, layer_norm=layer_norm)
    fresh.load_state_dict(batched.stacked_state(state))
    assert all(th.equal(a, b) for a, b in zip(fresh.parameters(), batched.parameters(), strict=True))


def test_batched_critic_state_dict_is_sb3s():
    env = laser_env()
    policy = BatchedTD3Policy(env.observation_space, env.action_space, lambda _: 1e-3, net_arch=[16, 16])
    assert isinstance(policy.critic, BatchedCritic)
    stock = TD3("MlpPolicy", env, policy_kwargs=dict(net_arch=[16, 16]), **COMMON)
    assert isinstance(stock.critic, ContinuousCritic)
    state = stock.critic.state_dict()
    assert list(policy.critic.state_dict()) == list(state)
    policy.critic.load_state_dict(state)
    obs, actions = th.rand(4, 721) * 2 - 1, th.rand(4, 7) * 2 - 1
    for got, expected in zip(policy.critic(obs, actions), stock.critic(obs, actions), strict=True):
        th.testing.assert_close(got, expected)
    th.testing.assert_close(policy.critic.q1_forward(obs, actions), stock.critic.q1_forward(obs, actions))


def test_layer_norm_critic_keys_and_refusals():
    env = laser_env()
    policy = BatchedTD3Policy(
        env.observation_space, env.action_space, lambda _: 1e-3, net_arch=[8], critic_layer_norm=True
    )
    assert {k for k in policy.critic.state_dict() if k.startswith("qf0.")} == {
        "qf0.0.weight", "qf0.0.bias", "qf0.1.weight", "qf0.1.bias", "qf0.3.weight", "qf0.3.bias"
    }  # fmt: skip
    with pytest.raises(ValueError, match="PReLU"):
        BatchedMLP(2, 4, [4], nn.PReLU)
    with pytest.raises(ValueError, match="n must be"):
        BatchedMLP(0, 4, [4])


@pytest.mark.parametrize("policy_kwargs", [dict(), dict(critic_layer_norm=True)])
def test_save_load_round_trip(tmp_path, policy_kwargs):
    model = FastTD3("BatchedMlpPolicy", laser_env(), policy_kwargs=dict(net_arch=[16], **policy_kwargs), **COMMON)
    model.learn(40)
    model.save(tmp_path / "model.zip")
    obs = np.random.default_rng(0).uniform(-1, 1, (3, 721)).astype(np.float32)
    expected = model.predict(obs, deterministic=True)[0]
    for algo in (FastTD3, TD3):
        loaded = algo.load(tmp_path / "model.zip", env=laser_env())
        assert isinstance(loaded.policy, BatchedTD3Policy)
        assert loaded.policy.critic_layer_norm == policy_kwargs.get("critic_layer_norm", False)
        np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], expected)
        for key, value in model.critic.state_dict().items():
            assert th.equal(loaded.critic.state_dict()[key], value)
        loaded.learn(20)  # trains on


def test_mlp_policy_zip_is_a_plain_sb3_td3_zip(tmp_path):
    from sb3_vlm.formats.sb3_zip import load_algorithm

    model = FastTD3("MlpPolicy", laser_env(), policy_kwargs=dict(net_arch=[16]), **COMMON)
    model.learn(30)
    model.save(tmp_path / "model.zip")
    loaded = load_algorithm(tmp_path / "model.zip")
    assert type(loaded) is TD3 and type(loaded.policy).__module__.startswith("stable_baselines3")
    for key, value in model.policy.state_dict().items():
        assert th.equal(loaded.policy.state_dict()[key], value)
    assert FastTD3.load(tmp_path / "model.zip").critic.optimizer.defaults["fused"] is True


def test_batched_policy_zip_loads_as_td3_through_the_safe_loader(tmp_path):
    """A ``BatchedMlpPolicy`` zip is a TD3 one: ``load_algorithm`` (allowlisted unpickling) reads it as ``TD3``, not
    as a VLM policy, and the loaded policy acts like the saved one."""
    from sb3_vlm.formats.sb3_zip import is_vlm_zip, load_algorithm

    model = FastTD3("BatchedMlpPolicy", laser_env(), policy_kwargs=dict(net_arch=[16]), **COMMON)
    model.learn(30)
    model.save(tmp_path / "model.zip")
    assert not is_vlm_zip(tmp_path / "model.zip")
    loaded = load_algorithm(tmp_path / "model.zip")
    assert type(loaded) is TD3 and isinstance(loaded.policy, BatchedTD3Policy)
    obs = laser_env().observation_space.sample()[None]
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])


def test_bf16_is_opt_in_and_trains():
    model = FastTD3("BatchedMlpPolicy", laser_env(), bf16=True, policy_kwargs=dict(net_arch=[16]), **COMMON)
    before = [p.detach().clone() for p in model.actor.parameters()]
    model.learn(60)
    assert all(p.dtype == th.float32 for p in model.policy.parameters())  # fp32 master weights
    assert any(not th.equal(b, p) for b, p in zip(before, model.actor.parameters(), strict=True))
    assert np.isfinite(model.logger.name_to_value["train/critic_loss"])
    assert FastTD3("MlpPolicy", laser_env(), **COMMON).bf16 is False


@pytest.mark.parametrize("vlm_kwargs", [dict(), dict(feature_cache_bytes=2**24)])
def test_vlm_update_matches_stock_td3_on_the_vlm_policy(vlm_kwargs):
    """VLMTD3's update (one feature pass per batch, fused Adam, foreach polyak, frozen critic in the actor step) is
    stock TD3's on the same policy (which SB3 runs through the critic's and actor's forward)."""
    from sb3_vlm import VLMTD3, VLMTD3Policy

    policy_kwargs = dict(backbone="tiny", freeze_vlm=True, **vlm_kwargs)
    # The VLM zoo file's learning rate: Adam moves a weight with a near-zero gradient by up to ~lr whatever its size,
    # so float rounding there shows at the scale of lr.
    kwargs = {**COMMON, "batch_size": 8, "buffer_size": 60, "learning_rate": 1e-4, "policy_kwargs": policy_kwargs}
    stock = TD3(VLMTD3Policy, image_env(), **kwargs)
    ours = VLMTD3("VLMPolicy", image_env(), **kwargs)
    assert ours.critic.optimizer.defaults["fused"] is True
    ours.policy.load_state_dict(stock.policy.state_dict())
    for model in (stock, ours):
        model.set_logger(configure(None, []))
        fill(model, n=40)
        np.random.seed(1)
        th.manual_seed(1)
        model.train(gradient_steps=6, batch_size=8)
    assert_same_policy(stock, ours)
