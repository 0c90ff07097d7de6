"""Rate and concurrency limits, without sockets (policy/limits.py, the `limits:` key of
policy/loader.py, the `dockgate_limited_total` metric).

Claims under test: a caller's bucket holds `burst` tokens and refills at `rate` per second; a
start that finds too few tokens is refused with the seconds until there are enough (rounded
up) and spends nothing; an operation's cost spends more of it; ordinary exchanges and streams
hold separate slots, given back once (a second release changes nothing); callers are counted
apart (authenticated by identity, others by source as the failure throttle keys them); idle
entries are forgotten and the table stays bounded; a policy file's `limits:` is validated with
the file and line of the mistake.
"""

from __future__ import annotations

import json
import textwrap

import pytest

from dockgate.auth.identity import ANONYMOUS_IDENTITY, BASIC, NO_AUTH_IDENTITY, TOKEN, Identity
from dockgate.check import ALLOW, CheckRequest, run_check
from dockgate.observe.metrics import RequestCounts, render
from dockgate.policy.limits import (
    DEFAULT_COSTS,
    Limited,
    Limiter,
    Limits,
    Slot,
    caller_key,
    is_stream,
    limit_refusal,
)
from dockgate.policy.loader import PolicyError, parse_policy_text
from dockgate.policy.summary import summaries

RATE = Limits(rate=2.0, burst=4)


def start(
    limiter: Limiter,
    limits: Limits,
    now: float,
    *,
    key: str = "user:alice",
    operation: str = "ContainerList",
    stream: bool = False,
) -> Slot | Limited:
    return limiter.start("p", key, limits, operation=operation, stream=stream, now=now)


def test_burst_spent_then_refused_with_retry_after_then_refilled() -> None:
    limiter = Limiter()
    for _ in range(4):
        assert isinstance(start(limiter, RATE, 100.0), Slot)
    refused = start(limiter, RATE, 100.0)
    assert isinstance(refused, Limited)
    assert refused.limit == "rate"
    assert refused.retry_after == 1  # one token at 2/s: 0.5 s, rounded up
    # A refused start spends nothing: half a second later exactly one token is back.
    assert isinstance(start(limiter, RATE, 100.5), Slot)
    assert isinstance(start(limiter, RATE, 100.5), Limited)


def test_retry_after_is_rounded_up_seconds() -> None:
    limiter = Limiter()
    slow = Limits(rate=0.3, burst=1)
    assert isinstance(start(limiter, slow, 0.0), Slot)
    refused = start(limiter, slow, 0.0)
    assert isinstance(refused, Limited)
    assert refused.retry_after == 4  # 1 / 0.3 = 3.33 s
    later = start(limiter, slow, 2.0)  # 0.6 tokens: 0.4 / 0.3 = 1.33 s to go
    assert isinstance(later, Limited)
    assert later.retry_after == 2


def test_costs_spend_more_of_the_bucket() -> None:
    limiter = Limiter()
    limits = Limits(rate=1.0, burst=20, costs={"ImageCreate": 15})
    assert limits.cost("ImageCreate") == 15
    assert limits.cost("ImageBuild") == 20  # the default
    assert limits.cost("SystemPing") == 1
    assert isinstance(start(limiter, limits, 0.0, operation="ImageCreate"), Slot)
    # 5 tokens left: a second pull is refused, and says what it costs; a ping passes.
    refused = start(limiter, limits, 0.0, operation="ImageCreate")
    assert isinstance(refused, Limited)
    assert refused.retry_after == 10
    assert "ImageCreate costs 15" in refused.message
    assert isinstance(start(limiter, limits, 0.0, operation="SystemPing"), Slot)


def test_default_costs_never_exceed_a_small_burst() -> None:
    small = Limits(rate=1.0, burst=3)
    assert DEFAULT_COSTS["ImageBuild"] == 20
    assert small.cost("ImageBuild") == 3  # else a build could never pass
    limiter = Limiter()
    assert isinstance(start(limiter, small, 0.0, operation="ImageBuild"), Slot)
    assert isinstance(start(limiter, small, 0.0), Limited)


def test_concurrent_slots_come_back_once() -> None:
    limiter = Limiter()
    limits = Limits(concurrent=2)
    first, second = start(limiter, limits, 0.0), start(limiter, limits, 0.0)
    assert isinstance(first, Slot) and isinstance(second, Slot)
    refused = start(limiter, limits, 0.0)
    assert isinstance(refused, Limited)
    assert (refused.limit, refused.retry_after) == ("concurrent", 1)
    first.release()
    first.release()  # every ending may release: only the first counts
    assert not first.held
    third = start(limiter, limits, 0.0)
    assert isinstance(third, Slot)
    assert isinstance(start(limiter, limits, 0.0), Limited)


def test_streams_hold_their_own_slots() -> None:
    limiter = Limiter()
    limits = Limits(concurrent=1, streams=1)
    stream = start(limiter, limits, 0.0, operation="SystemEvents", stream=True)
    assert isinstance(stream, Slot)
    # The open stream does not take the ordinary slot ...
    ordinary = start(limiter, limits, 0.0)
    assert isinstance(ordinary, Slot)
    # ... and the streams limit refuses the next stream only.
    refused = start(limiter, limits, 0.0, operation="ContainerLogs", stream=True)
    assert isinstance(refused, Limited)
    assert refused.limit == "streams"
    ordinary.release()
    assert isinstance(start(limiter, limits, 0.0), Slot)
    stream.release()
    assert isinstance(start(limiter, limits, 0.0, operation="SystemEvents", stream=True), Slot)


def test_a_stream_spends_its_cost_when_it_starts() -> None:
    limiter = Limiter()
    limits = Limits(rate=0.01, burst=2)
    assert isinstance(start(limiter, limits, 0.0, operation="SystemEvents", stream=True), Slot)
    assert isinstance(start(limiter, limits, 0.0), Slot)
    assert isinstance(start(limiter, limits, 0.0, operation="SystemEvents", stream=True), Limited)


def test_callers_and_policies_are_counted_apart() -> None:
    limiter = Limiter()
    one = Limits(rate=0.01, burst=1)
    assert isinstance(start(limiter, one, 0.0, key="user:alice"), Slot)
    assert isinstance(start(limiter, one, 0.0, key="user:alice"), Limited)
    assert isinstance(start(limiter, one, 0.0, key="user:bob"), Slot)
    other = limiter.start(
        "other", "user:alice", one, operation="ContainerList", stream=False, now=0.0
    )
    assert isinstance(other, Slot)


def test_caller_keys() -> None:
    assert caller_key(Identity("alice", BASIC), "10.0.0.1") == "basic:alice"
    assert caller_key(Identity("alice", TOKEN, "laptop"), "10.0.0.2") == "token:alice"
    # Callers without credentials count by source, as the failure throttle keys sources:
    # IPv6 by /64, an IPv4-mapped address as its IPv4 address, a unix client by its uid.
    assert caller_key(ANONYMOUS_IDENTITY, "10.0.0.1") == "source:10.0.0.1"
    assert caller_key(NO_AUTH_IDENTITY, "10.0.0.1") == "source:10.0.0.1"
    assert caller_key(ANONYMOUS_IDENTITY, "2001:db8::1") == caller_key(
        ANONYMOUS_IDENTITY, "2001:db8::ffff:2"
    )
    assert caller_key(ANONYMOUS_IDENTITY, "2001:db8::1") != caller_key(
        ANONYMOUS_IDENTITY, "2001:db8:0:1::1"
    )
    assert caller_key(ANONYMOUS_IDENTITY, "::ffff:192.0.2.7") == "source:192.0.2.7"
    assert caller_key(ANONYMOUS_IDENTITY, "unix uid 1000") == "source:unix uid 1000"


@pytest.mark.parametrize(
    ("operation", "query", "stream"),
    [
        ("SystemEvents", "", True),
        ("ContainerAttach", "stream=1", True),
        ("ExecStart", "", True),
        ("ContainerWait", "", True),
        ("ContainerLogs", "stdout=1", False),
        ("ContainerLogs", "follow=1&stdout=1", True),
        ("ContainerLogs", "follow=false", False),
        ("ContainerLogs", "follow=0", False),
        ("ServiceLogs", "follow=true", True),
        ("ContainerStats", "", True),  # moby: stream defaults to true
        ("ContainerStats", "stream=0", False),
        ("ContainerStats", "stream=false", False),
        ("ContainerStats", "stream=1", True),
        ("ImageCreate", "fromImage=busybox", False),
        ("ContainerList", "", False),
    ],
)
def test_streams_are_the_long_lived_exchanges(operation: str, query: str, stream: bool) -> None:
    assert is_stream(operation, query) is stream


def test_idle_entries_are_forgotten() -> None:
    limiter = Limiter()
    limits = Limits(rate=1.0, burst=2, concurrent=4)
    held = start(limiter, limits, 0.0, key="user:busy")
    assert isinstance(held, Slot)
    idle = start(limiter, limits, 0.0, key="user:idle")
    assert isinstance(idle, Slot)
    idle.release()
    done = start(limiter, limits, 0.0, key="user:done")
    assert isinstance(done, Slot)
    done.release()
    assert len(limiter) == 3
    # A sweep (once a minute) drops the entries whose bucket is full again and that hold no
    # slot: an entry holding a slot stays, whatever its bucket.
    start(limiter, limits, 120.0, key="user:later")
    assert len(limiter) == 2
    held.release()
    start(limiter, limits, 240.0, key="user:later")
    assert len(limiter) == 1


def test_the_table_is_bounded() -> None:
    limiter = Limiter(max_callers=3)
    limits = Limits(rate=0.001, burst=1, concurrent=1)
    held = start(limiter, limits, 0.0, key="source:a")
    assert isinstance(held, Slot)
    for name in "bcdefg":
        slot = start(limiter, limits, 0.0, key=f"source:{name}")
        assert isinstance(slot, Slot)
        slot.release()  # (entries holding slots are bounded by the open connections)
        assert len(limiter) <= 3
    # The entry holding a slot survived the clearing: its caller is still at its limit.
    assert isinstance(start(limiter, limits, 0.0, key="source:a"), Limited)
    held.release()
    assert isinstance(start(limiter, limits, 0.0, key="source:a"), Limited)  # rate now


def test_the_refusal() -> None:
    refusal = limit_refusal("ContainerList", "ci", Limited("rate", 3, "limited to 2 requests/s"))
    assert (refusal.status, refusal.stage, refusal.reason, refusal.retry_after) == (
        429,
        "limit",
        "limit: rate",
        3,
    )
    assert refusal.message == (
        "dockgate: ContainerList refused by the limits of policy ci: limited to 2 requests/s; "
        "try again in 3 s"
    )
    answer = refusal.response(close=False)
    assert answer.startswith(b"HTTP/1.1 429 ")
    assert b"\r\nRetry-After: 3\r\n" in answer
    assert answer.endswith(
        b'{"message": "dockgate: ContainerList refused by the limits of policy '
        b'ci: limited to 2 requests/s; try again in 3 s"}\n'
    )


def test_limited_metric_is_counted_rendered_and_snapshotted() -> None:
    counts = RequestCounts()
    counts.count_limited("ci", "ImageBuild", "rate")
    counts.count_limited("ci", "ImageBuild", "rate")
    again = RequestCounts.from_json(counts.to_json())
    total = RequestCounts()
    total.add(again, gauges=False)
    total.add(counts, gauges=False)
    text = render(total, 2).decode()
    assert 'dockgate_limited_total{limit="rate",operation="ImageBuild",policy="ci"} 4.0' in text
    assert "dockgate_workers 2.0" in text
    # A snapshot written before the metric existed still reads.
    data = json.loads(counts.to_json())
    del data["limited"]
    old = json.dumps(data)
    assert RequestCounts.from_json(old).limited == {}


# ----- the policy file -------------------------------------------------------------------------

POLICY = """\
policies:
  ci:
    rules:
      - allow: {sections: ["*"]}
    limits:
      rate: 20
      burst: 40
      concurrent: 16
      streams: 8
      costs: {ImageBuild: 30, SystemPing: 0}
  plain:
    rules:
      - allow: {sections: ["*"]}
    limits: {concurrent: 2}
  open:
    rules:
      - allow: {sections: ["*"]}
default: ci
"""


def test_limits_are_loaded() -> None:
    policies = parse_policy_text(POLICY, "p.yaml")
    assert policies.policies["ci"].limits == Limits(
        20.0, 40, 16, 8, {"ImageBuild": 30, "SystemPing": 0}
    )
    assert policies.policies["plain"].limits == Limits(concurrent=2)
    assert policies.policies["open"].limits is None
    # Without a burst: twice the rate, rounded up.
    toml = parse_policy_text(
        '[policies.t]\nrules = [{allow = {sections = ["*"]}}]\nlimits = {rate = 2.5}\n',
        "p.toml",
        toml=True,
    )
    assert toml.policies["t"].limits == Limits(rate=2.5, burst=5)
    assert Limits(rate=2.5, burst=5, concurrent=3).describe() == (
        "2.5 requests/s (burst 5), 3 at once"
    )


@pytest.mark.parametrize(
    ("limits", "line", "problem"),
    [
        ("rate: 0", 6, "limits: rate must be a positive number (per second)"),
        ("rate: -1", 6, "limits: rate must be a positive number (per second)"),
        ('rate: "fast"', 6, "policies.p.limits.rate: Input should be a valid number"),
        ("rate: true", 6, "policies.p.limits.rate: Input should be a valid number"),
        ("rate: 1\n      burst: 0", 7, "limits: burst must be at least 1"),
        ("concurrent: 0", 6, "limits: concurrent must be at least 1"),
        ("streams: -2", 6, "limits: streams must be at least 1"),
        ("burst: 3\n      concurrent: 1", 6, "limits: burst applies to a rate: give 'rate:' too"),
        ("concurrent: 1\n      costs: {ImageBuild: 1}", 7, "limits: costs applies to a rate"),
        ("rate: 1\n      costs: {ImageBulid: 1}", 7, "unknown operation 'ImageBulid'"),
        ("rate: 1\n      costs: {imagebuild: 1}", 7, "did you mean ImageBuild?"),
        ("rate: 1\n      burst: 2\n      costs: {ImageBuild: 3}", 8, "a larger one would never"),
        ("rate: 1\n      costs: {ImageBuild: -1}", 7, "must be 0 to the burst (2)"),
        ("concurent: 1", 6, "unknown key 'concurent'"),
        ("{}", 5, "limits: give at least one of rate, concurrent, streams"),
    ],
)
def test_bad_limits_name_file_and_line(limits: str, line: int, problem: str) -> None:
    text = textwrap.dedent(
        """\
        policies:
          p:
            rules:
              - allow: {sections: ["*"]}
            limits:
              LIMITS
        """
    ).replace("LIMITS", limits)
    with pytest.raises(PolicyError) as raised:
        parse_policy_text(text, "bad.yaml")
    assert raised.value.line == line, str(raised.value)
    assert problem in raised.value.problem
    assert str(raised.value).startswith(f"bad.yaml:{line}: ")


def test_check_explains_limits_without_knowing_the_live_state() -> None:
    policies = parse_policy_text(POLICY, "p.yaml")
    out: list[str] = []
    request = CheckRequest(
        "GET", "/v1.41/containers/x/logs?follow=1&stdout=1", Identity("alice", BASIC), "10.0.0.1"
    )
    assert run_check(request, policies, out) == ALLOW
    limited = "limited to 20 requests/s (burst 40), 16 at once, 8 streams at once"
    assert f"limits:    {limited}, per caller (basic:alice, each worker)" in out
    assert (
        "           this request is a stream: costs 1 token, holds a stream slot while open; over "
        "a limit the gateway answers 429 with Retry-After (live state, not known here)"
    ) in out
    out.clear()
    build = CheckRequest("POST", "/v1.41/build", ANONYMOUS_IDENTITY, "10.0.0.2")
    run_check(build, policies, out)
    assert any(
        "this request is a request: costs 30 tokens, holds a request slot" in line for line in out
    ), out
    assert any("per caller (source:10.0.0.2, each worker)" in line for line in out)
    # A policy without limits says nothing of them.
    out.clear()
    open_policy = parse_policy_text(POLICY.replace("default: ci", "default: open"), "p.yaml")
    run_check(CheckRequest("GET", "/_ping", ANONYMOUS_IDENTITY, "10.0.0.1"), open_policy, out)
    assert not any(line.startswith("limits:") for line in out)


def test_the_startup_summary_names_the_limits() -> None:
    (line,) = summaries(parse_policy_text(POLICY, "p.yaml"))  # the default policy, ci
    assert line.endswith(
        "[guardrails on, limited to 20 requests/s (burst 40), 16 at once, 8 streams at once "
        "per caller and worker]"
    ), line
    (line,) = summaries(parse_policy_text(POLICY.replace("default: ci", "default: open"), "p"))
    assert "limited" not in line


def test_a_table_full_of_busy_callers_is_not_swept_for_each_new_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    limiter = Limiter(max_callers=4)
    limits = Limits(concurrent=1)
    held = [start(limiter, limits, 0.0, key=f"source:{n}") for n in range(4)]
    assert all(isinstance(slot, Slot) for slot in held)
    passes: list[int] = []
    real = limiter._make_room

    def counted(now: float) -> None:
        passes.append(len(limiter))
        real(now)

    monkeypatch.setattr(limiter, "_make_room", counted)
    for n in range(4, 12):
        assert isinstance(start(limiter, limits, 0.0, key=f"source:{n}"), Slot)
    # Full of callers holding slots: room was made at 4 (nothing to drop), then at 8.
    assert passes == [4, 8]
    assert len(limiter) == 12
