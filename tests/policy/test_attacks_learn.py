"""Attacks on `dockgate learn` (issue 15) by a caller whose requests reach the audit log: the
learned policy must grant no more than the recorded session did, to no one else.

Each record is handmade as observe/audit.py writes it; the effect of a learned policy is shown
by the gateway's own decision code (`learndiff.diff`, as `dockgate check` decides) on a request
the session never sent. xfail(strict): a finding; plain: an attack that held."""

from __future__ import annotations

import pathlib

import pytest

from dockgate.body.guardrails import BodyRefused, Guardrails, check_request
from dockgate.observe.audit import body_details
from dockgate.policy.learn import Learner
from dockgate.policy.learndiff import diff
from dockgate.policy.loader import load_policy_file
from dockgate.policy.rules import PolicySet


def rec(operation: str, method: str, path: str, **extra: object) -> dict[str, object]:
    record: dict[str, object] = {
        "identity": "mallory",
        "auth": "basic",
        "source": "10.0.0.9",
        "peer": "10.0.0.9:4000",
        "method": method,
        "path": path,
        "operation": operation,
        "decision": "allow",
        "status": 201,
    }
    record.update(extra)
    return record


def create(**details: object) -> dict[str, object]:
    return rec("ContainerCreate", "POST", "/v1.41/containers/create", details=details)


def learn(
    records: list[dict[str, object]], tmp_path: pathlib.Path, **kw: str
) -> tuple[str, PolicySet]:
    learner = Learner()
    for record in records:
        learner.add(record)
    text = learner.document(**kw)
    path = tmp_path / "learned.yaml"
    path.write_text(text)
    return text, load_policy_file(str(path))  # valid, as `dockgate policy validate` says


def allowed(policies: PolicySet, record: dict[str, object]) -> bool:
    result = diff([record], policies)
    assert result.decided == 1
    return result.allowed == 1


# ----- findings ---------------------------------------------------------------------------------


@pytest.mark.xfail(
    strict=True,
    reason="an image reference with fnmatch metacharacters (the daemon refuses it, but audit "
    "mode forwards it and learn ignores the status) is learned as an `images` pattern: "
    "`*.*/*` then admits every image of every registry",
)
@pytest.mark.parametrize("image", ["*.*/*", "*", "[a-z]*/*"])
def test_an_image_name_with_wildcards_is_not_learned_as_a_pattern(
    tmp_path: pathlib.Path, image: str
) -> None:
    seen = create(image="busybox:1.36")
    bogus = {**create(image=image), "status": 400}
    _, policies = learn([seen, bogus], tmp_path)
    assert allowed(policies, create(image="busybox:1.36"))  # what the session ran
    never = "ghcr.io/evil/miner:1" if "." in image else "docker.io/library/ubuntu:24.04"
    if image == "[a-z]*/*":
        never = "docker.io/evil/miner:1"
    assert not allowed(policies, create(image=never))


@pytest.mark.xfail(
    strict=True,
    reason="`devices` is one boolean: a single create asking for /dev/null learns "
    "`devices: true`, which then passes /dev/sda (the host's disk), never seen",
)
def test_one_harmless_device_does_not_open_every_device(tmp_path: pathlib.Path) -> None:
    _, policies = learn([create(image="busybox", devices=["/dev/null"])], tmp_path)
    assert allowed(policies, create(image="busybox", devices=["/dev/null"]))
    assert not allowed(policies, create(image="busybox", devices=["/dev/sda"]))


@pytest.mark.xfail(
    strict=True,
    reason="learn --policy rebuilds a create from the audited fields only and counts it "
    "allowed: a create with SecurityOpt seccomp=unconfined, which the gateway refuses "
    "under CURRENT (security_overrides false), is reported as allowed",
)
def test_learn_policy_does_not_count_as_allowed_what_the_gateway_refuses(
    tmp_path: pathlib.Path,
) -> None:
    current = tmp_path / "current.yaml"
    current.write_text(
        "policies:\n  ci:\n    rules:\n      - allow: {operations: [ContainerCreate]}\n"
        "bindings:\n  - {policy: ci, users: [mallory]}\n"
    )
    body = b'{"Image": "busybox", "HostConfig": {"SecurityOpt": ["seccomp=unconfined"]}}'
    with pytest.raises(BodyRefused):  # what the gateway does with the real body
        check_request(Guardrails(), "ContainerCreate", "", body)
    # ...and what the audit log keeps of it (body_details has no security options)
    record = create(**(body_details("ContainerCreate", body, False) or {}))
    result = diff([record], load_policy_file(str(current)))
    assert result.allowed == 0, "reported allowed, refused by the gateway"
