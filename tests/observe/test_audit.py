"""The audit trail (dockgate.observe.audit), the shared line sink (dockgate.observe.logsink) and
the access log on top of it: rendering, the object of a request, what of a request body is recorded
(read as the daemon reads it, checked against a real dockerd at the end), files, and flushing."""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import os
import random
import re
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockgate.api.routes import identify
from dockgate.http.query import query_value
from dockgate.observe import logsink
from dockgate.observe.accesslog import AccessLog, AccessRecord, open_access_log
from dockgate.observe.audit import (
    AUDIT_BODY_LIMIT,
    AUDITED_BODIES,
    MAX_STRING_CHARS,
    AuditLog,
    AuditRecord,
    audit_details,
    body_details,
    format_time,
    open_audit_log,
    render,
    target_object,
)
from dockgate.observe.logsink import LineSink, open_sink
from support.clients import Cleanup
from support.daemon import PrivateDaemon

# 2026-11-27T23:11:24.123Z
STARTED = 1795821084.123


def record(**changes: object) -> AuditRecord:
    fields: dict[str, object] = {
        "started": STARTED,
        "identity": "alice",
        "auth": "token",
        "auth_detail": "ci-token",
        "source": "10.0.0.7",
        "peer": "10.0.0.2:51234",
        "method": "POST",
        "target": "/v1.41/containers/create?name=web",
        "operation": "ContainerCreate",
        "object": "web",
        "allowed": True,
        "policy": "ci",
        "reason": "rule 3",
        "status": 201,
        "bytes_in": 312,
        "bytes_out": 88,
        "duration_s": 0.0123456,
        "details": {"image": "busybox", "cmd": ["sh"]},
    }
    fields.update(changes)
    return AuditRecord(**fields)  # type: ignore[arg-type]


def audit_lines(log_record: AuditRecord) -> list[str]:
    out = io.StringIO()
    log = AuditLog(LineSink(out))
    log.write(log_record)  # no running loop: written at once
    return out.getvalue().splitlines(keepends=True)


# ----- rendering --------------------------------------------------------------------------------


def test_render_exact_line() -> None:
    """Every key, in the documented order, with exactly these values, one line ending in \\n."""
    lines = audit_lines(record())
    assert lines == [
        '{"time":"2026-11-27T23:11:24.123Z","identity":"alice","auth":"token",'
        '"auth_detail":"ci-token","source":"10.0.0.7","peer":"10.0.0.2:51234","method":"POST",'
        '"path":"/v1.41/containers/create?name=web","operation":"ContainerCreate",'
        '"object":"web","decision":"allow","policy":"ci","reason":"rule 3","status":201,'
        '"bytes_in":312,"bytes_out":88,"duration_ms":12.346,'
        '"details":{"image":"busybox","cmd":["sh"]}}\n'
    ]


def test_render_omits_empty_optional_keys_and_denies() -> None:
    line = render(
        record(
            identity="-",
            auth="none",
            auth_detail="",
            object=None,
            allowed=False,
            policy=None,
            reason="no rule allows it",
            status=403,
            details=None,
            duration_s=0.0005,
        )
    )
    fields = json.loads(line)
    assert list(fields) == [
        "time",
        "identity",
        "auth",
        "source",
        "peer",
        "method",
        "path",
        "operation",
        "decision",
        "policy",
        "reason",
        "status",
        "bytes_in",
        "bytes_out",
        "duration_ms",
    ]
    assert fields["decision"] == "deny"
    assert fields["policy"] is None
    assert fields["identity"] == "-"
    assert fields["auth"] == "none"
    assert fields["reason"] == "no rule allows it"
    assert fields["status"] == 403
    assert fields["duration_ms"] == 0.5


@pytest.mark.parametrize(
    ("started", "expected"),
    [
        (0.0, "1970-01-01T00:00:00.000Z"),
        (STARTED, "2026-11-27T23:11:24.123Z"),
        (1700000000.5, "2023-11-14T22:13:20.500Z"),
        (1700000000.0004, "2023-11-14T22:13:20.000Z"),
        (1700000039.9996, "2023-11-14T22:14:00.000Z"),  # rounds into the next minute
        (951782400.001, "2000-02-29T00:00:00.001Z"),
    ],
)
def test_time_is_rfc3339_utc_with_milliseconds(started: float, expected: str) -> None:
    assert format_time(started) == expected
    assert json.loads(render(record(started=started)))["time"] == expected


def test_time_of_now_has_the_format() -> None:
    now = time.time()
    stamp = json.loads(render(record(started=now)))["time"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp)
    assert stamp.startswith(time.strftime("%Y-%m-%dT", time.gmtime(now)))


def test_values_are_json_escaped_and_one_line() -> None:
    nasty = 'a"b\\c\nd\re\x00f\u2028g\udcff\u00e9'
    line = render(record(identity=nasty, target="/x?q=" + nasty, reason=nasty))
    assert "\n" not in line
    assert "\r" not in line
    assert line.isascii()
    fields = json.loads(line)
    assert fields["identity"] == nasty
    assert fields["path"] == "/x?q=" + nasty
    assert fields["reason"] == nasty


def test_long_strings_are_cut() -> None:
    long = "x" * 5000
    exact = "y" * MAX_STRING_CHARS
    fields = json.loads(
        render(record(target=long, details={"cmd": [long, exact], long: "key", "n": {"m": long}}))
    )
    cut = "x" * (MAX_STRING_CHARS - 1) + "…"
    assert fields["path"] == cut
    assert fields["details"]["cmd"] == [cut, exact]
    assert fields["details"][cut] == "key"
    assert fields["details"]["n"] == {"m": cut}


def test_details_stay_plain_bounded_json() -> None:
    """Non-finite floats, deep nesting and odd types from a caller still give one valid line."""
    deep: object = "bottom"
    for _ in range(50):
        deep = [deep]
    line = render(
        record(details={"nan": float("nan"), "inf": float("inf"), "deep": deep, "set": {1}})
    )
    fields = json.loads(line)  # NaN/Infinity would not even parse with strict JSON below
    json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} in the audit line"))
    assert fields["details"]["nan"] == "nan"
    assert fields["details"]["inf"] == "inf"
    assert fields["details"]["set"] == "{1}"
    depth, value = 0, fields["details"]["deep"]
    while isinstance(value, list):
        depth, value = depth + 1, value[0]
    assert value == "…"
    assert depth < 10


# ----- the object of a request ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "target", "expected"),
    [
        ("POST", "/v1.41/containers/web/start", "web"),
        ("POST", "/containers/3f4e5d/stop", "3f4e5d"),
        ("GET", "/v1.56/containers/web/json", "web"),
        ("DELETE", "/v1.41/containers/web?force=1", "web"),
        ("POST", "/v1.41/containers/web/exec", "web"),
        ("POST", "/v1.41/exec/abc123/start", "abc123"),
        ("GET", "/v1.41/exec/abc123/json", "abc123"),
        ("DELETE", "/containers/web/checkpoints/cp1", "web"),
        ("GET", "/v1.41/images/busybox:latest/json", "busybox:latest"),
        (
            "GET",
            "/v1.41/images/registry.example:5000/team/app:1.2/json",
            "registry.example:5000/team/app:1.2",
        ),
        ("DELETE", "/v1.41/images/sha256:abcd", "sha256:abcd"),
        ("POST", "/v1.41/images/busybox/tag?repo=mine&tag=v1", "busybox"),
        ("POST", "/v1.41/images/team/app/push?tag=v2", "team/app:v2"),
        ("POST", "/v1.41/images/team/app/push", "team/app"),
        ("GET", "/v1.41/networks/frontend", "frontend"),
        ("POST", "/v1.41/networks/frontend/connect", "frontend"),
        ("DELETE", "/v1.41/volumes/data", "data"),
        ("GET", "/v1.41/services/svc1", "svc1"),
        ("POST", "/v1.41/services/svc1/update?version=3", "svc1"),
        ("GET", "/v1.41/nodes/node1", "node1"),
        ("GET", "/v1.41/tasks/t1/logs", "t1"),
        ("DELETE", "/v1.41/secrets/s1", "s1"),
        ("POST", "/v1.41/configs/c1/update", "c1"),
        ("POST", "/v1.41/plugins/vieux/sshfs:latest/enable", "vieux/sshfs:latest"),
        ("GET", "/v1.41/distribution/busybox/json", "busybox"),
        ("POST", "/v1.41/containers/create?name=web", "web"),
        ("POST", "/v1.41/containers/create?platform=linux&name=a%2Bb+c", "a+b c"),
        ("POST", "/v1.41/containers/create", None),
        ("POST", "/v1.41/containers/create?name=", None),
        ("POST", "/v1.41/images/create?fromImage=busybox&tag=latest", "busybox:latest"),
        ("POST", "/v1.41/images/create?fromImage=busybox", "busybox"),
        ("POST", "/v1.41/images/create?fromImage=busybox&tag=sha256:abc", "busybox@sha256:abc"),
        ("POST", "/v1.41/images/create?fromSrc=-&repo=imported&tag=v1", "imported:v1"),
        ("POST", "/v1.41/images/create?fromSrc=-", None),
        ("POST", "/v1.41/commit?container=web&repo=snap", "web"),
        ("POST", "/v1.41/plugins/pull?remote=vieux/sshfs&name=ssh", "vieux/sshfs"),
        ("POST", "/v1.41/plugins/create?name=myplugin", "myplugin"),
        ("GET", "/v1.41/containers/json?all=1", None),
        ("GET", "/_ping", None),
        ("GET", "/v1.41/info", None),
        ("POST", "/v1.41/services/create", None),
        ("OPTIONS", "/v1.41/containers/web/json", None),
        ("DELETE", "/containers/", None),  # the daemon gets an empty name: no object
    ],
)
def test_target_object(method: str, target: str, expected: str | None) -> None:
    path, _, query = target.partition("?")
    match = identify(method, path)
    assert match is not None or expected is None
    assert target_object(match, query) == expected
    assert target_object(match, "?" + query) == expected


def test_target_object_without_a_route() -> None:
    assert target_object(None, "name=web") is None
    assert target_object(identify("GET", "/nothing/here"), "") is None


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("name=a&name=b", "a"),  # the first value, as Go's FormValue
        ("x=1&name=a+b%21", "a b!"),
        ("name=a;b&name=c", "c"),  # a pair with ';' is skipped (Go 1.17+)
        ("name=%zz&name=ok", "ok"),  # a bad %-escape skips the pair
        ("na%6De=encoded-key", "encoded-key"),
        ("&&name=", ""),
        ("other=1", None),
        ("", None),
    ],
)
def test_query_value_reads_like_go(query: str, expected: str | None) -> None:
    assert query_value(query, "name") == expected


# ----- request bodies ---------------------------------------------------------------------------


def details_of(operation: str, body: object) -> dict[str, object] | None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return body_details(operation, raw, False)


def test_container_create_details() -> None:
    body = {
        "Image": "busybox:latest",
        "Cmd": ["sh", "-c", "echo hi"],
        "Entrypoint": ["/bin/tini", "--"],
        "Env": ["PASSWORD=hunter2", "TOKEN=s3cr3t=x", "DEBUG"],
        "Labels": {"api_key": "labelsecret"},
        "HostConfig": {
            "Privileged": True,
            "Binds": ["/:/host:ro", "data:/data"],
            "Mounts": [
                {
                    "Type": "volume",
                    "Source": "cifs",
                    "Target": "/mnt",
                    "VolumeOptions": {"DriverConfig": {"Options": {"password": "volsecret"}}},
                }
            ],
        },
    }
    assert details_of("ContainerCreate", body) == {
        "image": "busybox:latest",
        "cmd": ["sh", "-c", "echo hi"],
        "entrypoint": ["/bin/tini", "--"],
        "privileged": True,
        "binds": ["/:/host:ro", "data:/data"],
        "mounts": [{"type": "volume", "source": "cifs", "target": "/mnt"}],
        "env_names": ["PASSWORD", "TOKEN", "DEBUG"],
    }


def test_container_create_leaves_out_absent_and_default_fields() -> None:
    body = {"Image": "busybox", "HostConfig": {"Privileged": False, "Binds": []}, "Env": []}
    assert details_of("ContainerCreate", body) == {"image": "busybox"}
    assert details_of("ContainerCreate", {}) == {}
    assert details_of("ContainerCreate", {"HostConfig": None, "Cmd": None}) == {}


def test_exec_create_details() -> None:
    body = {
        "AttachStdout": True,
        "Cmd": ["id", "-u"],
        "User": "nobody",
        "Privileged": True,
        "Tty": True,
        "Env": ["SECRET=value"],
        "WorkingDir": "/tmp",
    }
    assert details_of("ContainerExec", body) == {
        "cmd": ["id", "-u"],
        "user": "nobody",
        "privileged": True,
        "tty": True,
        "env_names": ["SECRET"],
    }
    assert details_of("ContainerExec", {"Cmd": ["ls"], "User": "", "Privileged": False}) == {
        "cmd": ["ls"]
    }
    assert details_of("ContainerExec", {"Cmd": ["ls"], "Tty": False}) == {
        "cmd": ["ls"],
        "tty": False,
    }


@pytest.mark.parametrize("operation", ["ServiceCreate", "ServiceUpdate"])
def test_service_details(operation: str) -> None:
    body = {
        "Name": "web",
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": "nginx:1.25",
                "Command": ["nginx"],
                "Args": ["-g", "daemon off;"],
                "Env": ["DB_PASSWORD=pw"],
                "Mounts": [{"Type": "bind", "Source": "/etc", "Target": "/host-etc"}],
                "Secrets": [{"SecretName": "x"}],
            },
            "Resources": {"Limits": {"MemoryBytes": 1}},
        },
        "Mode": {"Replicated": {"Replicas": 2}},
    }
    expected: dict[str, object] = {
        "image": "nginx:1.25",
        "cmd": ["nginx"],
        "args": ["-g", "daemon off;"],
        "mounts": [{"type": "bind", "source": "/etc", "target": "/host-etc"}],
        "env_names": ["DB_PASSWORD"],
    }
    if operation == "ServiceCreate":
        expected = {"name": "web", **expected}
    assert details_of(operation, body) == expected
    assert details_of(operation, {"Name": "x", "Mode": {}}) == (
        {"name": "x"} if operation == "ServiceCreate" else {}
    )


def test_other_operations_record_no_body() -> None:
    assert body_details("ContainerStart", b'{"Image":"x"}', False) is None
    assert body_details("ImageBuild", b"\x00" * 10, True) is None
    assert body_details("unknown", b"", False) is None
    assert body_details("-", b"{}", False) is None
    assert frozenset({"ContainerCreate", "ContainerExec", "ServiceCreate", "ServiceUpdate"}) == (
        AUDITED_BODIES
    )
    assert AUDIT_BODY_LIMIT == 256 * 1024


@pytest.mark.parametrize("operation", sorted(AUDITED_BODIES))
def test_truncated_body_is_too_large_to_record(operation: str) -> None:
    assert body_details(operation, b'{"Image":"busybox"}', True) == {"body": "too large to record"}
    assert body_details(operation, b"{", True) == {"body": "too large to record"}


@pytest.mark.parametrize("operation", sorted(AUDITED_BODIES))
@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"   ",
        b"{",
        b'{"Image": "x",}',
        b"[]",
        b'"string"',
        b"42",
        b"null",
        b"true",
        b"\xef\xbb\xbf{}",  # a BOM: Go refuses it
        b'{"StopTimeout": NaN}',  # Go refuses NaN and Infinity
        b'{"x": Infinity}',
        b"\xff\xfe{\x00}\x00",  # UTF-16: Go refuses it
        b"[" * 100_000,  # deeper than Python's recursion limit
        b'{"a":' * 5000 + b"1" + b"}" * 5000,
        b'{"Tty": 1' + b"0" * 5000 + b"}",  # an integer too long to convert
        b"\x00{}",
    ],
)
def test_unparsable_bodies(operation: str, body: bytes) -> None:
    assert body_details(operation, body, False) == {"body": "unparsable"}


def test_bodies_are_read_like_the_daemon_reads_them() -> None:
    """Go's encoding/json: keys match case-insensitively (with simple folding), the last
    duplicate wins, null leaves strings/bools but clears slices and pointers, a struct given
    twice merges, a lone string is a one-element Cmd, only the first JSON value counts."""
    cc = "ContainerCreate"
    assert details_of(cc, {"image": "a", "cmd": "echo hi", "hostconfig": {"privileged": True}}) == {
        "image": "a",
        "cmd": ["echo hi"],
        "privileged": True,
    }
    assert details_of(cc, b'{"Image":"shown","IMAGE":"runs","Cmd":["a"],"cMD":["b"]}') == {
        "image": "runs",
        "cmd": ["b"],
    }
    assert details_of(
        cc, b'{"HostConfig":{"Privileged":true},"hostConfig":{"Binds":["/:/h"]}}'
    ) == {"privileged": True, "binds": ["/:/h"]}
    assert details_of(cc, b'{"HostConfig":{"Privileged":true},"HostConfig":null}') == {}
    assert details_of(cc, b'{"Image":"kept","Image":null,"Cmd":["x"],"Cmd":null}') == {
        "image": "kept"
    }
    assert details_of(cc, b'{"HostConfig":{"Privileged":true,"privileged":false}}') == {}
    assert details_of(cc, b'{"HostConfig":{"Privileged":true,"privileged":null}}') == {
        "privileged": True
    }
    # U+017F (long s) folds to "s", U+212A (Kelvin sign) to "k"; U+0131 (dotless i) to nothing.
    assert details_of(
        "ContainerExec", '{"U\u017fer":"root","User":"x","U\u017fER":"r"}'.encode()
    ) == {"user": "r"}
    assert details_of(
        "ServiceCreate",
        '{"Tas\u212aTemplate":{"ContainerSpec":{"Image":"nginx"}}}'.encode(),
    ) == {"image": "nginx"}
    assert details_of("ContainerExec", '{"Cmd":["a"],"Us\u0131r":"root"}'.encode()) == {
        "cmd": ["a"]
    }
    assert details_of(cc, b' \r\n\t{"Image":"first"} {"Image":"second"} trailing') == {
        "image": "first"
    }
    assert details_of(cc, b'{"Image":"bad\xff\xfeutf8"}') == {"image": "bad\ufffd\ufffdutf8"}
    # TaskTemplate is not a pointer: a null leaves it; ContainerSpec is one: a null clears it.
    assert details_of(
        "ServiceUpdate",
        b'{"TaskTemplate":{"ContainerSpec":{"Image":"a"}},"TaskTemplate":null}',
    ) == {"image": "a"}
    assert (
        details_of(
            "ServiceUpdate",
            b'{"TaskTemplate":{"ContainerSpec":{"Image":"a"},"ContainerSpec":null}}',
        )
        == {}
    )


def test_wrongly_typed_fields_are_recorded_as_sent_but_never_env() -> None:
    """A wrongly typed field makes the daemon refuse the request; it is recorded as sent, which
    for Env would be its values: an Env that is not a list of strings is not recorded at all."""
    assert details_of("ContainerCreate", {"Image": 5, "Cmd": {"a": 1}}) == {
        "image": 5,
        "cmd": {"a": 1},
    }
    assert details_of("ContainerExec", {"Cmd": "id"}) == {"cmd": "id"}  # []string, not strslice
    assert details_of("ContainerCreate", {"Env": "PASSWORD=hunter2"}) == {}
    assert details_of("ContainerCreate", {"Env": {"PASSWORD": "hunter2"}}) == {}
    assert details_of("ContainerCreate", {"Env": ["A=1", 5, None, {"B": "hunter2"}]}) == {
        "env_names": ["A"]
    }
    assert details_of("ContainerCreate", {"HostConfig": "privileged"}) == {}
    assert details_of("ContainerCreate", {"HostConfig": {"Privileged": "true"}}) == {}


SECRET = "hunter2-s3cr3t"


@pytest.mark.parametrize(
    ("operation", "body"),
    [
        ("ContainerCreate", {"Image": "x", "Env": [f"PASSWORD={SECRET}", f"env={SECRET}"]}),
        ("ContainerCreate", {"env": [f"A={SECRET}"], "eNV": [f"B={SECRET}"]}),
        ("ContainerCreate", {"Labels": {"k": SECRET}, "HostConfig": {"LogConfig": SECRET}}),
        ("ContainerExec", {"Cmd": ["id"], "Env": [f"TOKEN={SECRET}"]}),
        (
            "ServiceCreate",
            {
                "Name": "s",
                "TaskTemplate": {"ContainerSpec": {"Env": [f"X={SECRET}"], "Secrets": SECRET}},
                "Labels": {"x": SECRET},
            },
        ),
        (
            "ContainerCreate",
            {"HostConfig": {"Mounts": [{"Type": "volume", "VolumeOptions": SECRET}]}},
        ),
    ],
)
def test_secret_values_never_reach_the_audit_log(operation: str, body: object) -> None:
    details = audit_details(operation, json.dumps(body).encode(), False, registry_auth=True)
    assert details is not None
    assert details["registry_auth"] is True
    line = render(record(operation=operation, details=details))
    assert SECRET not in line
    assert SECRET not in json.dumps(json.loads(line), ensure_ascii=False)


def test_audit_details_adds_registry_auth_only() -> None:
    assert audit_details("ImageCreate", b"", False) is None
    assert audit_details("ImageCreate", b"", False, registry_auth=True) == {"registry_auth": True}
    assert audit_details("ContainerCreate", b'{"Image":"x"}', False, registry_auth=True) == {
        "image": "x",
        "registry_auth": True,
    }
    assert audit_details("ContainerCreate", b"{", False, registry_auth=True) == {
        "body": "unparsable",
        "registry_auth": True,
    }
    # The shared markers are copies: changing one result does not change the next.
    first = body_details("ContainerCreate", b"{", False)
    assert first is not None
    first["x"] = 1
    assert body_details("ContainerCreate", b"{", False) == {"body": "unparsable"}


def test_long_body_values_are_cut() -> None:
    details = details_of("ContainerCreate", {"Image": "i" * 10_000, "Cmd": ["c" * 5000]})
    assert details is not None
    assert details["image"] == "i" * (MAX_STRING_CHARS - 1) + "…"
    assert details["cmd"] == ["c" * (MAX_STRING_CHARS - 1) + "…"]


def _random_json(rng: random.Random, depth: int = 0) -> object:
    keys = ["Image", "image", "Cmd", "Entrypoint", "HostConfig", "Privileged", "Binds", "Env"]
    keys += ["User", "Tty", "TaskTemplate", "ContainerSpec", "Command", "Args", "Mounts", "Name"]
    keys += ["Type", "Source", "Target", "", "\u212a", "x\u017f"]
    kind = rng.randrange(9 if depth < 5 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.randrange(-(10**20), 10**20)
    if kind == 3:
        return rng.random() * 1e300
    if kind in (4, 5):
        return "".join(chr(rng.randrange(0x110000)) for _ in range(rng.randrange(8)))
    if kind in (6, 7):
        return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randrange(6))}
    return [_random_json(rng, depth + 1) for _ in range(rng.randrange(5))]


def _check_fuzzed(operation: str, body: bytes) -> None:
    details = body_details(operation, body, False)
    assert details is None or isinstance(details, dict)
    line = render(record(operation=operation, details=details))
    assert "\n" not in line
    assert len(line) < 20 * len(body) + 4096
    json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} in {line!r}"))


@pytest.mark.parametrize("operation", [*sorted(AUDITED_BODIES), "ContainerStart"])
def test_fuzzed_bodies_never_raise(operation: str) -> None:
    rng = random.Random(f"dockgate-audit-{operation}")
    seeds = [
        b'{"Image":"busybox","Cmd":["sh"],"HostConfig":{"Privileged":true,"Binds":["/:/h"]}}',
        b'{"Cmd":["id"],"User":"root","Privileged":true,"Tty":true,"Env":["A=1"]}',
        b'{"TaskTemplate":{"ContainerSpec":{"Image":"n","Command":["a"],"Args":["b"]}}}',
        b'{"HostConfig":{"Mounts":[{"Type":"bind","Source":"/","Target":"/x"}]}}',
    ]
    for _ in range(400):
        body = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(1, 6)):
            op = rng.randrange(4)
            pos = rng.randrange(len(body) + 1)
            if op == 0 and body:
                body[min(pos, len(body) - 1)] = rng.randrange(256)
            elif op == 1:
                body[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4)))
            elif op == 2:
                del body[pos : pos + rng.randrange(1, 8)]
            else:
                body[pos:pos] = rng.choice([b"{", b"}", b"[", b"]", b'"', b",", b":", b"null"])
        _check_fuzzed(operation, bytes(body))
    for _ in range(300):
        _check_fuzzed(operation, bytes(rng.randrange(256) for _ in range(rng.randrange(64))))
    for _ in range(300):
        value = {"x": _random_json(rng)} if rng.random() < 0.2 else _random_json(rng)
        text = json.dumps(value, ensure_ascii=rng.random() < 0.5)
        _check_fuzzed(operation, text.encode("utf-8", "surrogatepass"))


# ----- files, "off", stdout -----------------------------------------------------------------------


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("umask_022")
def test_audit_file_is_created_0600_and_appended_to(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = open_audit_log(str(path))
    assert log.enabled
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    log.write(record())
    log.close()
    log = open_audit_log(str(path))
    log.write(record(allowed=False, status=403))
    log.close()
    lines = path.read_text().splitlines()
    assert [json.loads(line)["decision"] for line in lines] == ["allow", "deny"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.usefixtures("umask_022")
def test_existing_log_file_keeps_its_mode_and_content(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_text("earlier\n")
    path.chmod(0o640)
    log = open_audit_log(str(path))
    log.write(record())
    log.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    lines = path.read_text().splitlines()
    assert lines[0] == "earlier"
    assert json.loads(lines[1])["identity"] == "alice"


@pytest.mark.usefixtures("umask_022")
def test_access_log_file_is_created_0600_too(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = open_access_log(str(path), "text")
    log.write(AccessRecord("unix", "GET", "/_ping", "1.1", 200, 0, 2, 0.001))
    log.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == (
        'unix "GET /_ping HTTP/1.1" 200 in=0 out=2 dur_ms=1.000 op=- decision=- user=-\n'
    )


def test_unopenable_file_raises(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        open_audit_log(str(tmp_path / "missing-dir" / "audit.log"))


def test_off_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    log = open_audit_log("off")
    assert not log.enabled
    log.write(record())
    log.flush()
    log.close()
    assert open_sink("off") is None
    assert list(tmp_path.iterdir()) == []
    assert capsys.readouterr() == ("", "")


def test_dash_is_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    log = open_audit_log("-")
    assert log.enabled
    log.write(record())
    log.close()  # stdout is not the sink's to close
    out, err = capsys.readouterr()
    assert json.loads(out)["object"] == "web"
    assert err == ""
    print("still open")
    assert capsys.readouterr().out == "still open\n"


# ----- flushing ---------------------------------------------------------------------------------


def test_without_a_loop_lines_are_written_at_once() -> None:
    out = io.StringIO()
    sink = LineSink(out)
    sink.write("one")
    assert out.getvalue() == "one\n"


def test_in_a_loop_lines_wait_for_the_flush_delay() -> None:
    async def scenario() -> None:
        out = io.StringIO()
        sink = LineSink(out)
        log = AuditLog(sink)
        log.write(record())
        sink.write("second")
        assert out.getvalue() == ""
        await asyncio.sleep(logsink.FLUSH_DELAY_SECONDS / 5)
        assert out.getvalue() == ""
        await asyncio.sleep(logsink.FLUSH_DELAY_SECONDS * 3)
        lines = out.getvalue().splitlines()
        assert len(lines) == 2
        assert json.loads(lines[0])["identity"] == "alice"
        assert lines[1] == "second"
        # An explicit flush writes at once and cancels the timer.
        sink.write("third")
        sink.flush()
        assert out.getvalue().endswith("second\nthird\n")
        await asyncio.sleep(logsink.FLUSH_DELAY_SECONDS * 2)
        assert out.getvalue().count("third") == 1

    asyncio.run(scenario())


def test_a_full_buffer_is_written_at_once() -> None:
    async def scenario() -> None:
        out = io.StringIO()
        sink = LineSink(out)
        line = "z" * 999
        count = -(-logsink.FLUSH_BUFFER_CHARS // 1000)  # lines of 1000 chars to fill it
        for _ in range(count - 1):
            sink.write(line)
        assert out.getvalue() == ""
        sink.write(line)
        assert out.getvalue() == (line + "\n") * count
        sink.close()

    asyncio.run(scenario())


def test_close_flushes_and_closes_only_owned_streams(tmp_path: Path) -> None:
    async def scenario() -> None:
        out = io.StringIO()
        sink = LineSink(out)
        sink.write("pending")
        sink.close()
        assert out.getvalue() == "pending\n"
        assert not out.closed
        assert sink.closed
        sink.write("after close")
        sink.flush()
        assert out.getvalue() == "pending\n"

        owned = open_sink(str(tmp_path / "f.log"))
        assert owned is not None
        owned.write("line")
        owned.close()
        assert (tmp_path / "f.log").read_text() == "line\n"

    asyncio.run(scenario())


def test_a_failing_stream_warns_once_and_never_raises(capsys: pytest.CaptureFixture[str]) -> None:
    class Failing(io.StringIO):
        fail = True

        def write(self, s: str) -> int:
            if self.fail:
                raise OSError(28, "No space left on device")
            return super().write(s)

    out = Failing()
    sink = LineSink(out, name="/var/log/audit.log")
    sink.write("lost 1")
    sink.write("lost 2")
    err = capsys.readouterr().err
    assert err.count("warning") == 1
    assert "/var/log/audit.log" in err
    assert "No space left on device" in err
    out.fail = False
    sink.write("kept")
    assert out.getvalue() == "kept\n"
    out.fail = True
    sink.write("lost 3")
    assert capsys.readouterr().err.count("warning") == 1  # a new failure warns again


def test_access_log_keeps_its_api_and_formats() -> None:
    out = io.StringIO()
    log = AccessLog(out, "json")
    assert log.enabled
    log.write(
        AccessRecord("10.0.0.1:5", "GET", "/v1.41/info", "1.1", 200, 0, 10, 0.002, "", "SystemInfo")
    )
    log.flush()
    fields = json.loads(out.getvalue())
    assert fields["operation"] == "SystemInfo"
    assert fields["path"] == "/v1.41/info"
    assert fields["duration_ms"] == 2.0
    assert out.getvalue().count("\n") == 1

    out = io.StringIO()
    log = AccessLog(out)
    log.write(AccessRecord("unix", "POST", "/x", "1.1", 502, 1, 2, 0.0, note="upstream failed"))
    assert out.getvalue() == (
        'unix "POST /x HTTP/1.1" 502 in=1 out=2 dur_ms=0.000 op=- decision=- user=- '
        "(upstream failed)\n"
    )
    off = AccessLog(None)
    assert not off.enabled
    off.write(AccessRecord("unix", "GET", "/", "1.1", 200, 0, 0, 0.0))
    off.flush()
    assert not open_access_log("off", "text").enabled


# ----- against the daemon: body_details names what dockerd actually stores ------------------------


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(30)
        sock.connect(self.unix_path)
        self.sock = sock


def _daemon_request(
    daemon: PrivateDaemon, method: str, path: str, body: bytes | None = None
) -> tuple[int, bytes]:
    conn = _UnixConnection(str(daemon.socket_path))
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# Bodies whose reading differs between a lenient JSON reader and Go's; "IMG" is the test image.
TRICKY_CREATE_BODIES = [
    b'{"image":"IMG","cmd":"echo hi","hostconfig":{"privileged":true,"binds":["/tmp:/x"]}}',
    b'{"Image":"nope","image":"IMG","Cmd":["a"],"CMD":["b"]}',
    b'{"Image":"IMG","HostConfig":{"Privileged":true},"hostConfig":{"Binds":["/tmp:/y"]}}',
    b'{"Image":"IMG","HostConfig":{"Privileged":true},"HostConfig":null}',
    b'{"Image":"IMG","Image":null,"Entrypoint":["e"],"Entrypoint":null,"Cmd":["c"]}',
    b'{"Image":"IMG","HostConfig":{"Privileged":true},"Entrypoint":["e"],"entrypoint":"f"}',
    '{"Image":"IMG","Cmd":["\u017f"],"HostConfig":{"Binds":["/tmp:/a"],"Bind\u017f":null}}'.encode(),
    b'{"Image":"IMG","Cmd":["t"]} {"Image":"other"}',
    b'{"Image":"IMG","Cmd":["\xff\xfe"]}',
]


@pytest.mark.daemon
@pytest.mark.timeout(180)
@pytest.mark.parametrize("template", TRICKY_CREATE_BODIES)
def test_container_create_details_match_the_daemon(
    daemon: PrivateDaemon, busybox_image: str, cleanup: Cleanup, template: bytes
) -> None:
    body = template.replace(b"IMG", busybox_image.encode())
    status, answer = _daemon_request(daemon, "POST", "/v1.41/containers/create", body)
    assert status == 201, answer
    container = cleanup.container(json.loads(answer)["Id"])
    status, answer = _daemon_request(daemon, "GET", f"/v1.41/containers/{container}/json")
    assert status == 200, answer
    inspect = json.loads(answer)
    details = body_details("ContainerCreate", body, False)
    assert details is not None
    assert details.get("image") == inspect["Config"]["Image"]
    if "cmd" in details:
        assert details["cmd"] == inspect["Config"]["Cmd"]
    else:
        # The image's default, unless the request sets an entrypoint (which drops it).
        assert inspect["Config"]["Cmd"] == (None if "entrypoint" in details else ["sh"])
    assert details.get("entrypoint") == inspect["Config"]["Entrypoint"]
    assert details.get("privileged", False) == inspect["HostConfig"]["Privileged"]
    assert details.get("binds") == inspect["HostConfig"]["Binds"]


@pytest.mark.daemon
@pytest.mark.timeout(180)
def test_exec_create_details_match_the_daemon(
    daemon: PrivateDaemon, busybox_image: str, cleanup: Cleanup
) -> None:
    create = json.dumps({"Image": busybox_image, "Cmd": ["sleep", "60"]}).encode()
    status, answer = _daemon_request(daemon, "POST", "/v1.41/containers/create", create)
    assert status == 201, answer
    container = cleanup.container(json.loads(answer)["Id"])
    status, answer = _daemon_request(daemon, "POST", f"/v1.41/containers/{container}/start", b"")
    assert status == 204, answer
    for body in [
        b'{"cmd":["id"],"user":"nobody","privileged":true,"tty":true}',
        '{"Cmd":["a"],"U\u017fer":"nobody","User":null,"Privileged":true,"privileged":false}'.encode(),
        b'{"Cmd":["a","b"],"Cmd":["c"],"Tty":true,"tty":null} {"User":"root"}',
    ]:
        status, answer = _daemon_request(
            daemon, "POST", f"/v1.41/containers/{container}/exec", body
        )
        assert status == 201, answer
        exec_id = json.loads(answer)["Id"]
        status, answer = _daemon_request(daemon, "GET", f"/v1.41/exec/{exec_id}/json")
        assert status == 200, answer
        process = json.loads(answer)["ProcessConfig"]
        details = body_details("ContainerExec", body, False)
        assert details is not None
        assert details["cmd"] == [process["entrypoint"], *process["arguments"]]
        assert details.get("user", "") == process.get("user", "")
        assert details.get("privileged", False) == process["privileged"]
        assert details.get("tty", False) == process["tty"]
