"""``BarnNavVecEnv.env_method`` with ``indices`` touches only the selected envs."""

import numpy as np
import pytest

from envs import BarnNavVecEnv


@pytest.fixture
def venv():
    env = BarnNavVecEnv(4, max_steps=50)
    env.seed(0)
    env.reset()
    for _ in range(3):
        env.step(np.repeat(env.batch.params.default[None], 4, axis=0))
    yield env
    env.close()


def test_env_method_reset_with_indices_resets_only_that_env(venv):
    steps_before = venv.batch.steps.copy()
    assert steps_before.tolist() == [3, 3, 3, 3]
    results = venv.env_method("reset", indices=[3])
    assert venv.batch.steps.tolist() == [3, 3, 3, 0]
    ((obs, info),) = results
    assert obs.shape == venv.observation_space.shape and info["world"] == venv.reset_infos[3]["world"]


def test_env_method_reset_is_seeded_and_takes_options(venv):
    (obs_a, info_a), (obs_b, info_b) = venv.env_method("reset", seed=7, options={"world_id": 5}, indices=[0, 1])
    assert info_a["world"] == info_b["world"] == "world_5.world"
    np.testing.assert_array_equal(obs_a, obs_b)  # same seed, same world: the same start
    assert venv.batch.steps.tolist() == [0, 0, 3, 3]


def test_env_method_render_and_batch_methods(venv):
    (image,) = venv.env_method("render", indices=2)
    assert image.ndim == 3 and image.shape[2] == 3
    with pytest.raises(ValueError, match="whole batch"):
        venv.env_method("get_images", indices=[1])
