"""Which environment values dockgate's warnings and errors may quote (issue 13's attack review:
`auth=db-password-hunter2` was printed as `auth=db-password-hunter2 is ignored ... did you mean
AUTH=db-password-hunter2?` in serve's start-up warnings and in doctor's report).

The rule: a value is quoted only when it is a switch value (0/1/true/false/yes/no/on/off, any
case, or empty); anything else may be a secret, and the variable is named alone.
"""

from __future__ import annotations

import pytest

from dockgate.policy.tecnativa import EnvironmentError_, policy_from_environment
from dockgate.startup.envwarnings import environment_warnings

SECRET = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"


def warnings(env: dict[str, str]) -> list[str]:
    return environment_warnings(env, {"DOCKGATE_LISTEN"}, compatibility=True)


@pytest.mark.parametrize("name", ["auth", "Secrets", "configs", "build", "log_level", "Post"])
def test_a_tecnativa_name_in_another_case_is_warned_without_its_value(name: str) -> None:
    """Would fail on the old code: the value was quoted twice."""
    (line,) = warnings({name: SECRET})
    assert SECRET not in line
    assert line.startswith(f"{name}=... is ignored")
    assert f"did you mean {name.upper()}?" in line


@pytest.mark.parametrize("value", ["1", "0", "TRUE", "off", " yes "])
def test_a_switch_value_is_still_quoted(value: str) -> None:
    """`containers=1` is surely meant for CONTAINERS=1: the whole fix is shown."""
    (line,) = warnings({"containers": value})
    assert f"containers={value} is ignored" in line
    assert f"did you mean CONTAINERS={value}?" in line


def test_an_empty_value_is_shown_as_empty() -> None:
    (line,) = warnings({"auth": ""})
    assert line.startswith("auth= is ignored")


def test_a_look_alike_name_with_a_secret_value_is_not_warned_at_all() -> None:
    """The typo check on other names keeps to switch values (CONTAINER=web1 is not meant for
    CONTAINERS): no line, so no value either."""
    assert warnings({"CONTAINER": SECRET}) == []
    (line,) = warnings({"CONTAINER": "1"})
    assert "did you mean CONTAINERS=1?" in line


def test_without_the_environment_policy_nothing_is_said() -> None:
    assert environment_warnings({"auth": SECRET}, set(), compatibility=False) == []


def test_an_unknown_dockgate_variable_is_named_without_its_value() -> None:
    (line,) = warnings({"DOCKGATE_LISTN": SECRET})
    assert SECRET not in line
    assert "did you mean DOCKGATE_LISTEN?" in line


@pytest.mark.parametrize("name", ["AUTH", "CONTAINERS", "POST", "ALLOW_START"])
def test_a_tecnativa_switch_with_a_non_switch_value_is_named_without_it(name: str) -> None:
    """Would fail on the old code: the error was `AUTH='sk_live_...': expected 0 or 1`."""
    with pytest.raises(EnvironmentError_) as raised:
        policy_from_environment({name: SECRET})
    assert SECRET not in str(raised.value)
    assert str(raised.value).startswith(f"{name} is set to something other than a switch")
