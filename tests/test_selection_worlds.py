"""Selection never on the test worlds: in-training evaluations and best_model/ use validation worlds carved from
the training worlds, which the run does not fit on; FTRL's test phases on the test worlds are an option."""

import pytest

from envs.worlds import FIT_IDS, SPLITS, TEST_IDS, TRAIN_IDS, VAL_IDS
from sb3_vlm.workflows.training import TrainSettings, run_worlds


def test_splits_partition_the_worlds():
    assert len(VAL_IDS) == 50 and len(FIT_IDS) == 200
    assert set(FIT_IDS) | set(VAL_IDS) == set(TRAIN_IDS) and not set(FIT_IDS) & set(VAL_IDS)
    assert not set(TRAIN_IDS) & set(TEST_IDS) and set(SPLITS["all"]) == set(TRAIN_IDS) | set(TEST_IDS)


def test_default_run_fits_without_the_validation_worlds_and_evaluates_on_them():
    fit, evaluated = run_worlds(TrainSettings(eval_episodes=10), eval_freq=100)
    assert fit == "fit"
    assert len(evaluated) == 10 and set(evaluated) <= set(VAL_IDS)
    assert evaluated[0] == VAL_IDS[0] and evaluated[-1] >= VAL_IDS[40]  # spread over the set


def test_ftrl_parity_option_evaluates_on_the_test_worlds():
    fit, evaluated = run_worlds(TrainSettings(eval_worlds="test", eval_episodes=50), eval_freq=100)
    assert fit == "train" and evaluated == list(TEST_IDS)


def test_no_evaluation_fits_on_every_training_world_and_given_worlds_are_kept():
    assert run_worlds(TrainSettings(), eval_freq=0) == ("train", [])
    assert run_worlds(TrainSettings(worlds=[1, 2]), eval_freq=10)[0] == [1, 2]


def test_unknown_eval_worlds_is_refused():
    with pytest.raises(ValueError, match="eval_worlds must be one of"):
        run_worlds(TrainSettings(eval_worlds="train"), eval_freq=10)
