"""Tecnativa/docker-socket-proxy compatibility (dockgate.policy.tecnativa), case by case.

Every case goes the whole in-process way a request goes:
`Gatekeeper(policy_from_environment(env)).check(method, target)`.

Reference: Tecnativa's haproxy.cfg allows a request when its path starts with
`(/v<version>)?/<section>` and the section's variable is 1, after denying every non-GET/HEAD
request unless POST=1; linuxserver's fork evaluates ALLOW_START/STOP/RESTARTS/PAUSE/UNPAUSE
before that POST check. dockgate decides on the identified operation instead of the path, and is
documented as stricter where they differ (writes over GET, exec creation needs EXEC=1).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import pytest

from dockgate.api.routes import OPERATIONS
from dockgate.policy.gatekeeper import Gatekeeper, Verdict
from dockgate.policy.tecnativa import (
    ACTION_VARIABLES,
    CLOSING_VARIABLES,
    SECTION_VARIABLES,
    EnvironmentError_,
    policy_from_environment,
)

DEFAULT_ON = ("EVENTS", "PING", "VERSION")


def check(env: Mapping[str, str], request: str) -> Verdict:
    method, _, target = request.partition(" ")
    return Gatekeeper(policy_from_environment(env)).check(method, target)


def allowed(env: Mapping[str, str], request: str) -> bool:
    """The answer for a request, which must be the same with and without a version prefix."""
    method, _, target = request.partition(" ")
    versioned = check(env, f"{method} /v1.41{target}")
    bare = check(env, request)
    assert versioned.allowed == bare.allowed, request
    assert versioned.operation == bare.operation, request
    return bare.allowed


def only(**variables: str) -> dict[str, str]:
    """An environment with the default-on sections switched off, plus `variables`."""
    env = dict.fromkeys(DEFAULT_ON, "0")
    env.update(variables)
    return env


# ----- defaults -------------------------------------------------------------------------------

DEFAULT_TABLE = [
    ("GET /_ping", True),
    ("HEAD /_ping", True),
    ("GET /version", True),
    ("GET /events", True),
    ("GET /containers/json", False),
    ("GET /info", False),
    ("POST /containers/create", False),
    ("GET /secrets", False),
    ("POST /auth", False),
    ("GET /images/json", False),
    ("GET /nonexistent", False),
]


@pytest.mark.parametrize(("request_line", "expected"), DEFAULT_TABLE)
def test_defaults_without_variables(request_line: str, expected: bool) -> None:
    """No variables: only ping, version and events are open, as in Tecnativa."""
    assert allowed({}, request_line) is expected


# ----- every section variable ----------------------------------------------------------------

# Variable -> (a read of its section, a write of its section); None where the section has none.
# POST /auth only checks credentials, but like Tecnativa it needs POST=1 (a POST is never let
# through with POST=0): it is this table's "write" for AUTH.
SECTION_REQUESTS: dict[str, tuple[str | None, str | None]] = {
    "AUTH": (None, "POST /auth"),
    "BUILD": (None, "POST /build"),
    "COMMIT": (None, "POST /commit"),
    "CONFIGS": ("GET /configs", "POST /configs/create"),
    "CONTAINERS": ("GET /containers/json", "POST /containers/create"),
    "DISTRIBUTION": ("GET /distribution/alpine/json", None),
    "EVENTS": ("GET /events", None),
    "EXEC": ("GET /exec/abc/json", "POST /exec/abc/start"),
    "GRPC": (None, "POST /grpc"),
    "IMAGES": ("GET /images/json", "POST /images/create"),
    "INFO": ("GET /info", None),
    "NETWORKS": ("GET /networks", "POST /networks/create"),
    "NODES": ("GET /nodes", "POST /nodes/abc/update"),
    "PING": ("GET /_ping", None),
    "PLUGINS": ("GET /plugins", "POST /plugins/pull"),
    "SECRETS": ("GET /secrets", "POST /secrets/create"),
    "SERVICES": ("GET /services", "POST /services/create"),
    "SESSION": (None, "POST /session"),
    "SWARM": ("GET /swarm", "POST /swarm/init"),
    "SYSTEM": ("GET /system/df", None),
    "TASKS": ("GET /tasks", None),
    "VERSION": ("GET /version", None),
    "VOLUMES": ("GET /volumes", "POST /volumes/create"),
}


def test_section_table_covers_every_variable() -> None:
    """The table below names every section variable the module knows, and no other."""
    assert set(SECTION_REQUESTS) == set(SECTION_VARIABLES)
    assert {name for name, (_, on) in SECTION_VARIABLES.items() if on} == set(DEFAULT_ON)


@pytest.mark.parametrize("variable", sorted(SECTION_REQUESTS))
def test_section_variable_read_only(variable: str) -> None:
    """VAR=1 POST=0: the section's read is allowed, its write denied."""
    read, write = SECTION_REQUESTS[variable]
    env = only(**{variable: "1", "POST": "0"})
    if read is not None:
        assert allowed(env, read)
    if write is not None:
        assert not allowed(env, write)


@pytest.mark.parametrize("variable", sorted(SECTION_REQUESTS))
def test_section_variable_with_post(variable: str) -> None:
    """VAR=1 POST=1: the section's read and write are both allowed."""
    read, write = SECTION_REQUESTS[variable]
    env = only(**{variable: "1", "POST": "1"})
    for request_line in (read, write):
        if request_line is not None:
            assert allowed(env, request_line), request_line


@pytest.mark.parametrize("variable", sorted(SECTION_REQUESTS))
def test_section_variable_off(variable: str) -> None:
    """VAR=0 (even with POST=1, and even for the default-on ones): read and write denied."""
    read, write = SECTION_REQUESTS[variable]
    env = {variable: "0", "POST": "1"}
    for request_line in (read, write):
        if request_line is not None:
            assert not allowed(env, request_line), request_line


@pytest.mark.parametrize("variable", sorted(SECTION_REQUESTS))
def test_section_variable_opens_nothing_else(variable: str) -> None:
    """VAR=1 POST=1 opens no read or write of any other section."""
    env = only(**{variable: "1", "POST": "1"})
    for other, requests in SECTION_REQUESTS.items():
        if other == variable:
            continue
        for request_line in requests:
            if request_line is not None:
                assert not allowed(env, request_line), (other, request_line)


# ----- read-only, dockgate's stricter sense -----------------------------------------------------


def test_post_0_denies_attach_websocket() -> None:
    """POST=0: GET .../attach/ws (a WebSocket carrying stdin) is denied even with CONTAINERS=1."""
    env = {"CONTAINERS": "1", "POST": "0"}
    assert not allowed(env, "GET /containers/abc/attach/ws")
    assert allowed({"CONTAINERS": "1", "POST": "1"}, "GET /containers/abc/attach/ws")


def test_post_0_allows_head_archive() -> None:
    """POST=0: HEAD .../archive (stat a path in the container) is a read: allowed."""
    assert allowed({"CONTAINERS": "1", "POST": "0"}, "HEAD /containers/x/archive")


# ----- narrow container actions (linuxserver order) ---------------------------------------------

ACTION_TABLE = {
    "ALLOW_START": {"POST /containers/x/start"},
    "ALLOW_STOP": {"POST /containers/x/stop"},
    "ALLOW_RESTARTS": {
        "POST /containers/x/stop",
        "POST /containers/x/restart",
        "POST /containers/x/kill",
    },
    "ALLOW_PAUSE": {"POST /containers/x/pause"},
    "ALLOW_UNPAUSE": {"POST /containers/x/unpause"},
}
CONTAINER_ACTIONS = set().union(*ACTION_TABLE.values())
OTHER_CONTAINER_REQUESTS = [
    "POST /containers/create",
    "GET /containers/json",
    "GET /containers/x/json",
    "DELETE /containers/x",
    "POST /containers/x/exec",
    "POST /containers/x/attach",
    "POST /containers/x/update",
]


@pytest.mark.parametrize("variable", sorted(ACTION_TABLE))
def test_action_variable_grants_exactly_its_operations(variable: str) -> None:
    """ALLOW_X=1 with CONTAINERS=0 POST=0 allows its actions and nothing else."""
    assert set(ACTION_TABLE) == set(ACTION_VARIABLES)
    env = {variable: "1", "CONTAINERS": "0", "POST": "0"}
    for request_line in sorted(CONTAINER_ACTIONS):
        assert allowed(env, request_line) is (request_line in ACTION_TABLE[variable]), request_line
    for request_line in OTHER_CONTAINER_REQUESTS:
        assert not allowed(env, request_line), request_line


def test_allow_start_does_not_open_create() -> None:
    """ALLOW_START=1: `POST /containers/x/start` allowed, `POST /containers/create` denied."""
    env = {"ALLOW_START": "1"}
    assert allowed(env, "POST /containers/x/start")
    assert not allowed(env, "POST /containers/create")


# ----- method switches --------------------------------------------------------------------------


def test_delete_0_with_post_1() -> None:
    """DELETE=0 POST=1: DELETE /containers/x denied, other writes allowed."""
    env = {"CONTAINERS": "1", "POST": "1", "DELETE": "0"}
    assert not allowed(env, "DELETE /containers/x")
    assert allowed(env, "POST /containers/create")
    assert allowed(env, "PUT /containers/x/archive")


def test_put_0_with_post_1() -> None:
    """PUT=0 POST=1: PUT /containers/x/archive denied, other writes allowed."""
    env = {"CONTAINERS": "1", "POST": "1", "PUT": "0"}
    assert not allowed(env, "PUT /containers/x/archive")
    assert allowed(env, "POST /containers/create")
    assert allowed(env, "DELETE /containers/x")


# ----- closing switches -------------------------------------------------------------------------

CLOSING_TABLE = {
    "ALLOW_LOGS": ["GET /containers/x/logs"],
    "ALLOW_EXEC": ["POST /containers/x/exec"],
    "ALLOW_ATTACH": ["POST /containers/x/attach", "GET /containers/x/attach/ws"],
    "ALLOW_ARCHIVE": [
        "GET /containers/x/archive",
        "HEAD /containers/x/archive",
        "PUT /containers/x/archive",
    ],
    "ALLOW_EXPORT": ["GET /containers/x/export"],
    "ALLOW_KILL": ["POST /containers/x/kill"],
}


@pytest.mark.parametrize("variable", sorted(CLOSING_TABLE))
def test_closing_variable_closes_its_operations(variable: str) -> None:
    """ALLOW_X=0 under CONTAINERS=1 POST=1 (and EXEC=1) denies its operations only."""
    assert set(CLOSING_TABLE) == set(CLOSING_VARIABLES)
    base = {"CONTAINERS": "1", "POST": "1", "EXEC": "1"}
    closed = {**base, variable: "0"}
    for request_line in CLOSING_TABLE[variable]:
        assert allowed(base, request_line), request_line
        assert not allowed(closed, request_line), request_line
    assert allowed(closed, "GET /containers/json")
    assert allowed(closed, "POST /containers/x/start")


# ----- exec creation ----------------------------------------------------------------------------


def test_exec_create_needs_exec_as_well_as_containers() -> None:
    """POST /containers/x/exec needs EXEC=1 besides CONTAINERS=1 and POST=1."""
    assert not allowed({"CONTAINERS": "1", "POST": "1"}, "POST /containers/x/exec")
    assert not allowed({"EXEC": "1", "POST": "1"}, "POST /containers/x/exec")
    assert not allowed({"CONTAINERS": "1", "EXEC": "1", "POST": "0"}, "POST /containers/x/exec")
    assert allowed({"CONTAINERS": "1", "EXEC": "1", "POST": "1"}, "POST /containers/x/exec")


# ----- values -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["maybe", "2", "enabled", "-1", "db-password-hunter2"])
def test_bad_value_names_the_variable(value: str) -> None:
    """A value that is not a boolean raises EnvironmentError_ naming the variable, not the
    value: it may be anything, a password among them (issue 13's attack review; this test
    quoted the value before)."""
    with pytest.raises(EnvironmentError_, match=r"^CONTAINERS is set to") as raised:
        policy_from_environment({"CONTAINERS": value})
    assert value not in str(raised.value)


def test_bad_value_of_a_method_or_action_variable() -> None:
    """POST, DELETE and the ALLOW_* variables are checked the same way."""
    for name in ("POST", "DELETE", "PUT", "ALLOW_START", "ALLOW_LOGS"):
        with pytest.raises(EnvironmentError_, match=name):
            policy_from_environment({name: "sometimes"})


@pytest.mark.parametrize("value", ["1", "true", "yes", "on", "TRUE", " Yes "])
def test_true_values(value: str) -> None:
    """1/true/yes/on (any case, surrounding blanks) switch a variable on."""
    assert allowed({"CONTAINERS": value}, "GET /containers/json")


@pytest.mark.parametrize("value", ["0", "false", "no", "off", "False", ""])
def test_false_values(value: str) -> None:
    """0/false/no/off and the empty value switch a variable off, default-on ones included."""
    assert not allowed({"CONTAINERS": value}, "GET /containers/json")
    assert not allowed({"PING": value}, "GET /_ping")


# ----- messages ---------------------------------------------------------------------------------


def test_denial_message_by_rule() -> None:
    """A write denied by the read-only rule names the operation, the policy and the variable
    still missing (issue 13: it said `(rule 1)`, which tells a Tecnativa user nothing); the
    ones already set are not repeated."""
    verdict = check({"CONTAINERS": "1"}, "POST /v1.41/containers/create")
    assert verdict.status == 403
    assert verdict.message == (
        "dockgate: ContainerCreate denied by policy environment (needs POST=1)"
    ), verdict.message
    assert verdict.operation == "ContainerCreate"
    both = check({}, "POST /v1.41/containers/create")
    assert both.message.endswith("(needs CONTAINERS=1 POST=1)"), both.message
    closed = check({"CONTAINERS": "1", "POST": "1", "ALLOW_EXEC": "0"}, "POST /containers/x/exec")
    assert closed.message == (
        "dockgate: ContainerExec denied by policy environment (closed by ALLOW_EXEC=0)"
    ), closed.message


def test_denial_message_without_rule() -> None:
    """A request no variable opens is denied with '(no rule allows it)' and the variable that
    would open it."""
    verdict = check({}, "GET /v1.41/containers/json")
    assert verdict.status == 403
    assert verdict.message == (
        "dockgate: ContainerList denied by policy environment "
        "(no rule allows it; needs CONTAINERS=1)"
    )
    assert verdict.label == "deny:environment:no-rule-allows-it"


def test_allowed_verdict() -> None:
    """An allowed request has status 0, no message and an allow label."""
    verdict = check({}, "GET /_ping")
    assert (verdict.allowed, verdict.status, verdict.message) == (True, 0, "")
    assert verdict.label.startswith("allow:environment:rule-")


# ----- differential: never looser than the HAProxy original -------------------------------------

_SECTION_ORDER = list(SECTION_VARIABLES)


def _linuxserver_allows(env: Mapping[str, str], method: str, path: str) -> bool:
    """linuxserver/docker-socket-proxy's haproxy.cfg, rule by rule (its `-m bool`: 0/1)."""

    def on(name: str, default: bool = False) -> bool:
        value = env.get(name)
        return default if value is None else value == "1"

    version = r"^(/v[\d.]+)?"
    actions = [
        ("ALLOW_RESTARTS", r"/containers/[a-zA-Z0-9_.-]+/((stop)|(restart)|(kill))"),
        ("ALLOW_START", r"/containers/[a-zA-Z0-9_.-]+/start"),
        ("ALLOW_STOP", r"/containers/[a-zA-Z0-9_.-]+/stop"),
        ("ALLOW_PAUSE", r"/containers/[a-zA-Z0-9_.-]+/pause"),
        ("ALLOW_UNPAUSE", r"/containers/[a-zA-Z0-9_.-]+/unpause"),
    ]
    for name, pattern in actions:
        if re.match(version + pattern, path, re.IGNORECASE) and on(name):
            return True
    if method not in ("GET", "HEAD") and not on("POST"):
        return False
    for name in _SECTION_ORDER:
        segment, default = SECTION_VARIABLES[name]
        if re.match(version + "/" + segment, path, re.IGNORECASE) and on(name, default):
            return True
    return False


def _differential_envs() -> list[dict[str, str]]:
    envs: list[dict[str, str]] = [{}]
    for name in SECTION_VARIABLES:
        for post in ("0", "1"):
            envs.append({name: "1", "POST": post})
    for name in ACTION_VARIABLES:
        envs.append({name: "1"})
    envs.append(dict.fromkeys(SECTION_VARIABLES, "1") | {"POST": "0"})
    return envs


def test_never_looser_than_tecnativa() -> None:
    """No operation is allowed that the HAProxy original (linuxserver order) would deny.

    dockgate documents itself as stricter where it differs. KNOWN DIVERGENCE: with POST=0,
    dockgate allows the POST operations its route table classes as reads (SystemAuth with
    AUTH=1, ContainerWait and ContainerCopy with CONTAINERS=1), which Tecnativa denies
    (`http-request deny unless METH_GET || { env(POST) -m bool }`).
    """
    looser: set[str] = set()
    for env in _differential_envs():
        gatekeeper = Gatekeeper(policy_from_environment(env))
        for op in OPERATIONS.values():
            path = "/v1.41" + re.sub(r"\{[^}]+\}", "x", op.path)
            verdict = gatekeeper.check(op.method, path)
            if path.endswith("/"):  # /debug/pprof/: a trailing slash is refused (400) anyway
                assert verdict.status == 400
                continue
            assert verdict.operation == op.name
            if verdict.allowed and not _linuxserver_allows(env, op.method, path):
                looser.add(f"{op.method} {path} with {env}")
    assert not looser, "\n".join(sorted(looser))
