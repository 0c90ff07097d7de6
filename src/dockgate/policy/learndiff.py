"""`dockgate learn --policy CURRENT`: what a policy would have denied of an audit log's requests.

Each forwarded request of the log is decided again by the gateway's own code, as `dockgate
check` decides one (check.py: the request head parsed by the gateway's reader, admitted by
`Admissions`, planned by policy/plan.py, its body judged by `judge_body`), never by a second
implementation of the rules. The body judged is the one the audit record describes
(`body_details`: image, command, binds, mounts, capabilities, devices, namespaces, exec user,
privileged), rebuilt as JSON; the rest of the original body is not in the log and is not judged.
A policy in warn or audit mode counts its would-denies as denials. Sans-IO: records in, a
`Diff` out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from dockgate.auth.identity import ANONYMOUS_IDENTITY, NO_AUTH_IDENTITY, Identity
from dockgate.check import CheckRequest, admissions_for, admit_as, parse_head, request_bytes
from dockgate.http.errors import ClientProtocolError
from dockgate.http.request import without_body
from dockgate.policy.admission import Admissions
from dockgate.policy.plan import (
    DrainBody,
    Forward,
    HoldBody,
    LookUp,
    Step,
    judge_body,
    judge_drained,
    plan_admitted,
    plan_request,
)
from dockgate.policy.rules import PolicySet
from dockgate.refusal import Refusal

# Not decided from what the log holds (counted apart, never as allowed or denied).
LOOKUP = "decided by a look-up in the daemon (ownership, a named volume's options)"
NO_BODY = "its body is judged, and the audit log does not record it"
PARTIAL_BODY = (
    "its body passes on the fields the audit log records (image, privileged, binds, mounts, "
    "capabilities, devices, namespaces); the others (security options, sysctls, limits, ...) "
    "are not recorded"
)
_NAMESPACE_FIELDS = {
    "network": "NetworkMode",
    "pid": "PidMode",
    "ipc": "IpcMode",
    "uts": "UTSMode",
    "userns": "UsernsMode",
    "cgroup": "CgroupnsMode",
}


@dataclass(slots=True)
class Denials:
    count: int = 0
    status: int = 0
    messages: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Diff:
    decided: int = 0
    allowed: int = 0
    denied: dict[str, Denials] = field(default_factory=dict)  # by the refusal's reason
    undecided: dict[str, int] = field(default_factory=dict)  # why, how many

    def lines(self, policy: str) -> list[str]:
        """The report `dockgate learn --policy` prints."""
        total = sum(d.count for d in self.denied.values())
        out = [
            f"{policy}: {self.decided} forwarded requests decided again: {self.allowed} "
            f"allowed, {total} would be denied"
        ]
        for reason, denials in sorted(self.denied.items(), key=lambda kv: (-kv[1].count, kv[0])):
            out.append(f"{denials.count:6d}  {reason} ({denials.status})")
            for message, count in sorted(denials.messages.items(), key=lambda kv: -kv[1]):
                out.append(f"{count:10d}  {message}")
        for why, count in sorted(self.undecided.items()):
            out.append(f"{count:6d}  not decided here: {why}")
        return out


def caller_identity(record: Mapping[str, object]) -> Identity:
    auth = str(record.get("auth", "none"))
    name = str(record.get("identity", "-"))
    if auth == "none":
        return NO_AUTH_IDENTITY
    if auth == "anonymous":
        return ANONYMOUS_IDENTITY
    return Identity(name, auth, str(record.get("auth_detail", "")))


def recorded_body(operation: str, details: object) -> bytes | None:
    """The body an audit record describes, as JSON; None when the record keeps none."""
    if not isinstance(details, dict) or "body" in details:
        return None
    body: dict[str, object]
    if operation == "ContainerCreate":
        host: dict[str, object] = {}
        if details.get("privileged") is True:
            host["Privileged"] = True
        for key, name in (("binds", "Binds"), ("cap_add", "CapAdd")):
            if isinstance(details.get(key), list):
                host[name] = details[key]
        if isinstance(details.get("mounts"), list):
            host["Mounts"] = [_mount(m) for m in details["mounts"] if isinstance(m, dict)]
        if isinstance(details.get("devices"), list):
            host["Devices"] = [
                {"PathOnHost": d, "PathInContainer": d, "CgroupPermissions": "rwm"}
                for d in details["devices"]
                if isinstance(d, str)
            ]
        for namespace in details.get("namespaces") or []:
            kind, _, container = str(namespace).partition(":")
            if kind in _NAMESPACE_FIELDS:
                host[_NAMESPACE_FIELDS[kind]] = "container:x" if container else "host"
        body = {"HostConfig": host}
        for key, name in (("image", "Image"), ("cmd", "Cmd"), ("entrypoint", "Entrypoint")):
            if key in details:
                body[name] = details[key]
    elif operation == "ContainerExec":
        body = {"AttachStdout": True}
        for key, name in (("cmd", "Cmd"), ("user", "User"), ("tty", "Tty")):
            if key in details:
                body[name] = details[key]
        if details.get("privileged") is True:
            body["Privileged"] = True
    elif operation in ("ServiceCreate", "ServiceUpdate"):
        spec: dict[str, object] = {}
        for key, name in (("image", "Image"), ("cmd", "Command"), ("args", "Args")):
            if key in details:
                spec[name] = details[key]
        if isinstance(details.get("mounts"), list):
            spec["Mounts"] = [_mount(m) for m in details["mounts"] if isinstance(m, dict)]
        body = {"TaskTemplate": {"ContainerSpec": spec}}
        if "name" in details:
            body["Name"] = details["name"]
    else:
        return None
    return json.dumps(body).encode()


def _mount(mount: Mapping[str, object]) -> dict[str, object]:
    rebuilt = {
        name.capitalize(): mount[name] for name in ("type", "source", "target") if name in mount
    }
    if mount.get("read_only") is True:
        rebuilt["ReadOnly"] = True
    return rebuilt


def diff(records: Iterable[Mapping[str, object]], policies: PolicySet) -> Diff:
    """Decide every forwarded request of `records` again under `policies`."""
    result = Diff()
    admissions: dict[bool, Admissions] = {}
    for record in records:
        if record.get("decision") != "allow":
            continue  # refused by the gateway then: it never reached the daemon
        result.decided += 1
        identity = caller_identity(record)
        required = identity.method != "none"
        if required not in admissions:
            admissions[required] = admissions_for(policies, credentials_required=required)
        outcome = _decide(admissions[required], policies, record, identity)
        if outcome is None:
            result.allowed += 1
        elif isinstance(outcome, str):
            result.undecided[outcome] = result.undecided.get(outcome, 0) + 1
        else:
            denials = result.denied.setdefault(outcome.reason, Denials(status=outcome.status))
            denials.count += 1
            denials.messages[outcome.message] = denials.messages.get(outcome.message, 0) + 1
    return result


def _decide(
    admissions: Admissions, policies: PolicySet, record: Mapping[str, object], caller: Identity
) -> Refusal | str | None:
    """None: allowed; a Refusal (or a warn/audit mode's would-deny); or why it is undecided."""
    operation = str(record.get("operation", ""))
    body = recorded_body(operation, record.get("details"))
    source = str(record.get("source", "127.0.0.1"))
    request = CheckRequest(
        method=str(record.get("method", "GET")),
        target=str(record.get("path", "/")),
        caller=caller,
        source=source,
        body=body,
        credentials_required=caller.method != "none",
    )
    try:
        head = parse_head(request_bytes(request))
    except ClientProtocolError as exc:
        return Refusal(400, f"dockgate: {exc.message}", "http", "malformed")
    admission = admit_as(admissions, head, caller, source)
    step: Step = plan_request(head, admission, policies.owners)
    while True:
        if isinstance(step, Refusal):
            return step
        if isinstance(step, DrainBody):
            refusal = judge_drained(step.allowed, b"")
            if refusal is not None:
                return refusal
            step = plan_admitted(without_body(step.head), step.allowed)
            continue
        if isinstance(step, LookUp):
            return LOOKUP
        if isinstance(step, HoldBody):
            if body is None:
                return step.allowed.verdict.would_deny or NO_BODY
            judged = judge_body(step, body)
            if isinstance(judged, Refusal):
                return judged
            if step.allowed.verdict.would_deny is not None:
                return step.allowed.verdict.would_deny
            # Rebuilt from the recorded fields only: passing them is not the gateway's allow.
            return LOOKUP if judged.needs_daemon else PARTIAL_BODY
        assert isinstance(step, Forward)
        return step.allowed.verdict.would_deny
