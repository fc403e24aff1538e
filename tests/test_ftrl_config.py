"""FTRL's RL YAML as it is: deep merge over a base, key mapping, unsupported keys reported, a real training run."""

import json
import warnings
from pathlib import Path

import pytest
import torch as th
import yaml
from _laser_env import image_env

from sb3_vlm.cli import main
from sb3_vlm.formats.ftrl_config import apply_ftrl_config, deep_merge, read_ftrl_config
from sb3_vlm.formats.sb3_zip import load_algorithm
from sb3_vlm.td3.td3 import VLMTD3
from sb3_vlm.zoo import default_conf, load_zoo_config

# §4.3, DWA column (buffer/<policy>/config.yaml underneath, the VLM file over it), shrunk to a test budget.
BASE = {
    "env_config": {"env_id": "dwa_param-v0", "seed": 3, "save_path": "logging/", "param_init": [1.5, 3.0]},
    "training_config": {
        "algorithm": "TD3",
        "buffer_size": 1000,
        "actor_lr": 1e-3,
        "policy_args": {"gamma": 0.95, "tau": 0.005, "n_step": 4, "exploration_noise": 0.2},
        "training_args": {"batch_size": 128, "max_step": 100000, "log_intervals": 10},
    },
}
VLM = {
    "env_config": {"seed": 14},
    "training_config": {
        "vlm_checkpoint_path": "tiny",
        "freeze_vlm_actor": True,
        "freeze_dpt_actor": False,
        "freeze_history_actor": False,
        "freeze_dpt_critic": True,
        "actor_lr": "2e-5",  # YAML reads this as a string; FTRL's float() does not care, nor do we
        "critic_lr": 2.0e-5,
        "exploration_noise_start": 0.05,
        "exploration_noise_end": 0.01,
        "pre_collect": 16,
        "policy_args": {
            "gamma": 0.99,
            "policy_noise": 0.2,
            "noise_clip": 0.5,
            "n_step": 6,
            "update_actor_freq": 2,
            "exploration_noise": 0.1,
        },
        "training_args": {"max_step": 32, "collect_per_step": 8, "update_per_step": 3, "batch_size": 4},
    },
    "ftrl_config": {"server_urls": [f"http://localhost:{7000 + i}" for i in range(8)], "start_port": 7000},
}


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def leaves(data: dict, prefix: str = ""):
    """Dotted keys of the leaves (``ftrl_config``, the server section, counts as one)."""
    for key, value in data.items():
        if isinstance(value, dict) and f"{prefix}{key}" != "ftrl_config":
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def test_deep_merge_keeps_base_keys_and_lets_the_override_win():
    merged = deep_merge(BASE, VLM)
    assert merged["training_config"]["policy_args"] == {
        **BASE["training_config"]["policy_args"],
        **VLM["training_config"]["policy_args"],
    }
    assert merged["training_config"]["buffer_size"] == 1000  # only in the base
    assert merged["env_config"] == {**BASE["env_config"], "seed": 14}
    assert BASE["env_config"]["seed"] == 3  # inputs untouched


def test_every_key_is_applied_or_reported(tmp_path):
    config = read_ftrl_config(write(tmp_path / "vlm.yaml", VLM), write(tmp_path / "base.yaml", BASE))
    cfg = load_zoo_config(default_conf("vlm"))
    cfg.n_envs = 2
    report = apply_ftrl_config(config, cfg)
    kw = cfg.algo_kwargs
    assert (kw["actor_lr"], kw["critic_lr"], kw["buffer_size"], kw["batch_size"]) == (2e-5, 2e-5, 1000, 4)
    assert (kw["gamma"], kw["tau"], kw["n_steps"], kw["policy_delay"]) == (0.99, 0.005, 6, 2)
    assert (kw["target_policy_noise"], kw["target_noise_clip"]) == (0.2, 0.5)
    assert (kw["learning_starts"], kw["gradient_steps"], kw["train_freq"]) == (16, 3, (4, "step"))  # 8 / 2 envs
    assert cfg.n_timesteps == 32 and cfg.noise_std == 0.05 and report.seed == 14
    policy = kw["policy_kwargs"]
    assert policy["backbone"] == "tiny" and policy["freeze_vlm"] is True and policy["freeze_dpt"] is False
    assert policy["freeze_history"] is False and policy["planner"] == "DWA" and cfg.env_kwargs["planner"] == "DWA"
    schedule = [s for s in cfg.callback_specs if isinstance(s, dict) and "NoiseScheduleCallback" in next(iter(s))]
    assert [next(iter(s.values()))["end"] for s in schedule] == [0.01]

    flat = {key for key, _ in report.applied} | {key for key, _ in report.unsupported}
    expected = set(leaves(config))
    assert flat == expected  # nothing dropped silently
    unsupported = dict(report.unsupported)
    assert set(unsupported) == {
        "env_config.save_path",
        "env_config.param_init",
        "training_config.algorithm",
        "training_config.training_args.log_intervals",
        "training_config.policy_args.exploration_noise",
        "ftrl_config",
    }
    message = report.warning()
    assert message is not None and all(key in message for key in unsupported)


def test_bad_values_name_the_key(tmp_path):
    cfg = load_zoo_config(default_conf("vlm"))
    with pytest.raises(ValueError, match=r"training_config.training_args.batch_size must be a non-negative integer"):
        apply_ftrl_config({"training_config": {"training_args": {"batch_size": 4.5}}}, cfg)
    with pytest.raises(ValueError, match=r"training_config.freeze_vlm_actor must be true or false, got 'yes'"):
        apply_ftrl_config({"training_config": {"freeze_vlm_actor": "yes"}}, cfg)
    with pytest.raises(ValueError, match=r"env_config.env_id must start with one of"):
        apply_ftrl_config({"env_config": {"env_id": "jackal-v0"}}, cfg)
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        read_ftrl_config(tmp_path / "nope.yaml")


def test_ftrl_yaml_trains_through_the_cli(tmp_path):
    vlm = write(tmp_path / "ftrl_vlm_dwa.yaml", VLM)
    base = write(tmp_path / "config.yaml", BASE)
    argv = ["train", "--ftrl-config", str(vlm), "--ftrl-base", str(base), "--n-envs", "2", "--log-dir",
            str(tmp_path / "runs"), "--final-eval", "0", "--eval-freq", "0", "--no-progress-bar",
            "--torch-threads", "1"]  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(argv) == 0
    ftrl_warnings = [str(w.message) for w in caught if "FTRL config" in str(w.message)]
    assert len(ftrl_warnings) == 1 and "ftrl_config" in ftrl_warnings[0] and "log_intervals" in ftrl_warnings[0]
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert "__14__" in run_dir.name  # env_config.seed
    assert json.loads((run_dir / "run_config.json").read_text())["seed"] == 14
    assert yaml.safe_load((run_dir / "config.yaml").read_text()) == read_ftrl_config(vlm, base)
    model = load_algorithm(run_dir / "model.zip", device="cpu")
    assert model.num_timesteps == 32 and model.batch_size == 4 and model.gradient_steps == 3
    assert (model.actor_lr, model.critic_lr, model.learning_starts) == (2e-5, 2e-5, 16)
    assert model.policy.features_extractor.freeze_vlm and not model.policy.features_extractor.freeze_dpt
    assert model.exploration_noise_start == pytest.approx(0.05)


def test_freeze_dpt_critic_false_trains_the_critics_own_dpt_copy(tmp_path):
    """FTRL's `freeze_dpt_critic: false`: the critic pools the hidden states with its own trainable DPT copy."""
    cfg = load_zoo_config(default_conf("vlm"))
    apply_ftrl_config({"training_config": {"freeze_dpt_critic": False, "freeze_dpt_actor": True}}, cfg)
    assert cfg.algo_kwargs["policy_kwargs"]["critic_dpt"] is True
    model = VLMTD3(
        "VLMPolicy",
        image_env(),
        policy_kwargs={"backbone": "tiny", "freeze_vlm": True, "freeze_dpt": True, "critic_dpt": True},
        actor_lr=1e-3,
        critic_lr=1e-3,
        batch_size=4,
        learning_starts=8,
        buffer_size=200,
        seed=0,
    )
    extractor, critic = model.policy.features_extractor, model.critic
    assert critic.dpt is not None and critic.dpt is not extractor.dpt and model.critic_target.dpt is not critic.dpt
    own = {id(p) for p in critic.dpt.parameters()}
    assert own <= {id(p) for group in critic.optimizer.param_groups for p in group["params"]}
    assert not own & {id(p) for p in extractor.parameters()}  # the actor's DPT is not the critic's
    shared_dpt = {k: v.clone() for k, v in extractor.dpt.state_dict().items()}
    critic_dpt = {k: v.clone() for k, v in critic.dpt.state_dict().items()}
    model.learn(24)
    assert all(th.equal(v, extractor.dpt.state_dict()[k]) for k, v in shared_dpt.items())  # frozen for the actor
    assert any(not th.equal(v, critic.dpt.state_dict()[k]) for k, v in critic_dpt.items())  # trained for the critic

    model.save(tmp_path / "model.zip")
    loaded = VLMTD3.load(tmp_path / "model.zip", device="cpu")
    assert loaded.policy.critic_dpt and loaded.critic.dpt is not None
    for k, v in critic.dpt.state_dict().items():
        assert th.equal(v, loaded.critic.dpt.state_dict()[k])
    obs = th.as_tensor(model.observation_space.sample()[None])
    action = th.zeros(1, model.action_space.shape[0])
    with th.no_grad():  # stock TD3's path (critic(obs, actions)) pools with the critic's own copy too
        expected = critic.q_values(critic.own_features(*model.policy.hidden(obs)), action)
        assert th.allclose(critic(obs, action)[0], expected[0])
