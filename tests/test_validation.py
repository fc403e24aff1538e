"""The shared argument checks: ``check_int``, ``check_positive`` and ``settings_from``."""

from dataclasses import dataclass

import numpy as np
import pytest

from sb3_vlm._validation import check_int, check_positive, settings_from


@pytest.mark.parametrize("value", [1, 7, np.int64(3), np.int32(1)])
def test_check_int_accepts_whole_numbers(value):
    result = check_int(value, "n")
    assert result == value and type(result) is int


@pytest.mark.parametrize(
    ("value", "minimum", "message"),
    [
        (0, 1, "Thing: n must be a positive int, got 0"),
        (-3, 1, "Thing: n must be a positive int, got -3"),
        (2.5, 1, "Thing: n must be a positive int, got 2.5"),
        (True, 1, "Thing: n must be a positive int, got True"),
        ("4", 1, "Thing: n must be a positive int, got '4'"),
        (None, 1, "Thing: n must be a positive int, got None"),
        (1, 2, "Thing: n must be an int >= 2, got 1"),
        (-2, -1, "Thing: n must be an int >= -1, got -2"),
    ],
)
def test_check_int_names_the_field_the_need_and_the_value(value, minimum, message):
    with pytest.raises(ValueError) as error:
        check_int(value, "n", minimum, owner="Thing")
    assert str(error.value) == message


@pytest.mark.parametrize("value", [0.5, 3, np.float32(1e-5)])
def test_check_positive_accepts_positive_numbers(value):
    result = check_positive(value, "lr")
    assert result == pytest.approx(float(value)) and type(result) is float


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "Thing: coef must be > 0, got 0"),
        (-0.5, "Thing: coef must be > 0, got -0.5"),
        (float("nan"), "Thing: coef must be > 0, got nan"),
        (True, "Thing: coef must be > 0, got True"),
        ("1", "Thing: coef must be > 0, got '1'"),
    ],
)
def test_check_positive_names_the_field_and_the_value(value, message):
    with pytest.raises(ValueError) as error:
        check_positive(value, "coef", owner="Thing")
    assert str(error.value) == message


def test_check_int_without_owner_and_with_a_note():
    with pytest.raises(ValueError) as error:
        check_int(0, "window", note="steps")
    assert str(error.value) == "window must be a positive int (steps), got 0"
    assert check_int(0, "seed", 0) == 0


@dataclass
class _Settings:
    a: int = 1
    b: str = "x"

    def __post_init__(self) -> None:
        check_int(self.a, "a", owner="_Settings")


def test_settings_from_passes_settings_through_and_defaults_without_warning(recwarn):
    settings = _Settings(2)
    assert settings_from(_Settings, settings, (), {}, "run") is settings
    assert settings_from(_Settings, None, (), {}, "run") == _Settings()
    assert not recwarn.list


def test_settings_from_old_call_form_warns_and_validates():
    with pytest.deprecated_call(match="run: the settings as separate arguments are deprecated.*pass a _Settings"):
        assert settings_from(_Settings, 3, ("y",), {}, "run") == _Settings(3, "y")
    with pytest.deprecated_call(), pytest.raises(ValueError, match="_Settings: a must be a positive int, got 0"):
        settings_from(_Settings, None, (), {"a": 0}, "run")


def test_settings_from_refuses_settings_and_arguments_together():
    with pytest.raises(TypeError, match="pass a _Settings or separate arguments, not both"):
        settings_from(_Settings, _Settings(), (), {"b": "z"}, "run")
