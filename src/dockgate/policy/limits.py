"""Rate and concurrency limits per caller: a pure object fed times, no I/O.

A policy may declare `limits:` (policy/loader.py); every caller bound to it then gets, on its
own (its identity when authenticated, else its source address, keyed as the failure throttle
keys sources: auth/throttle.py `source_key`, a unix-socket client by its uid):

- a token bucket of `burst` tokens refilled at `rate` tokens per second; each request spends
  its operation's cost (`DEFAULT_COSTS`, overridden by `costs:`), one for most;
- at most `concurrent` ordinary exchanges at once;
- at most `streams` long-lived exchanges at once (`is_stream`: event and log streams, stats,
  attach, exec, wait, BuildKit sessions: whatever may stay open for minutes or hours). A
  stream spends its cost from the bucket when it starts, and holds a stream slot, not an
  ordinary one: a `docker logs -f` left open does not take a slot other requests need.

Limits are checked when an exchange starts (`Limiter.start`) and never cut an exchange already
running: a refused start is answered 429 with `Retry-After` (seconds, rounded up) and spends
nothing. A started exchange holds a `Slot` until `Slot.release` (the relay calls it when the
exchange ends, whichever way; releasing twice is harmless, so every ending may call it).

State is per worker process (with `--workers N` a caller may get up to N times the limits) and
bounded: a caller's entry whose bucket is full again and who holds no slot is the same as no
entry, and is dropped by a sweep once per `SWEEP_SECONDS`; the table holds at most
`MAX_CALLERS` entries, past which such idle entries go first, then those that hold no slot
(forgetting a spent bucket hands back at most one burst: the safe direction for availability).
Entries holding slots are bounded by the open connections (when they alone fill the table,
room is made again only once it has doubled: a pass over the table per new caller would make
each request cost the table's size).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from dockgate.auth.identity import CONTAINER, PROCESS, Identity
from dockgate.auth.throttle import source_key
from dockgate.http.query import bool_value, query_value
from dockgate.refusal import Refusal

# What an operation costs when the policy does not say (tokens; most operations cost 1): what
# keeps the daemon, the disk or the network busy for long costs more than a ping.
DEFAULT_COSTS: Mapping[str, int] = {
    "ImageBuild": 20,
    "ImageCreate": 10,  # pull (or import)
    "ImagePush": 10,
    "ImageLoad": 10,
    "ImageGet": 5,
    "ImageGetAll": 5,
    "ImageCommit": 5,
    "ContainerExport": 5,
    "SystemDataUsage": 5,  # `docker system df` walks every layer and volume
    "BuildPrune": 5,
    "ContainerPrune": 5,
    "ImagePrune": 5,
    "NetworkPrune": 5,
    "VolumePrune": 5,
    "PluginPull": 10,
    "PluginUpgrade": 10,
    "PluginPush": 10,
}

# Operations that stay open for as long as the client wants: tunnels (attach, exec start,
# BuildKit sessions), and waits. Logs and stats are streams only when they follow (`is_stream`).
_ALWAYS_STREAMS = frozenset(
    {
        "SystemEvents",
        "ContainerAttach",
        "ContainerAttachWebsocket",
        "ExecStart",
        "ContainerWait",
        "Session",
        "GrpcSession",
    }
)
_FOLLOWED = frozenset({"ContainerLogs", "ServiceLogs", "TaskLogs"})


SWEEP_SECONDS = 60.0  # how often idle entries are looked for
MAX_CALLERS = 10_000  # entries kept at most


def _go_bool(value: str | None, default: bool) -> bool:
    """moby's httputils.BoolValue (an absent key: `default`), erring towards a stream."""
    if value is None:
        return default
    return bool_value(value)


def is_stream(operation: str, query: str) -> bool:
    """Whether an exchange of `operation` may stay open indefinitely (moby's router: logs
    follow with `follow=1`; stats stream unless `stream=0`, boolValueOrDefault true)."""
    if operation in _ALWAYS_STREAMS:
        return True
    if operation in _FOLLOWED:
        return _go_bool(query_value(query, "follow"), False)
    if operation == "ContainerStats":
        return _go_bool(query_value(query, "stream"), True)
    return False


@dataclass(frozen=True, slots=True)
class Limits:
    """A policy's limits, for each of its callers; None: that limit is off."""

    rate: float | None = None  # tokens per second
    burst: int = 0  # tokens the bucket holds (at least any explicit cost; with a rate, >= 1)
    concurrent: int | None = None  # ordinary exchanges at once
    streams: int | None = None  # long-lived exchanges at once
    costs: Mapping[str, int] = field(default_factory=dict)  # what the policy file said
    # The operations whose cost is not 1 by default or as the policy says, with their cost:
    # made once (`cost`, on every request).
    _table: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # A default never more than the bucket holds (over a small burst it would refuse
        # always); the policy's own costs as written (the loader bounds them by the burst).
        table = {op: min(cost, max(self.burst, 1)) for op, cost in DEFAULT_COSTS.items()}
        table.update(self.costs)
        object.__setattr__(self, "_table", table)

    def cost(self, operation: str) -> int:
        """Tokens one request of `operation` spends: the policy's cost, else the default."""
        return self._table.get(operation, 1)

    def describe(self) -> str:
        """One line, for `dockgate check` and the startup summary."""
        parts = []
        if self.rate is not None:
            parts.append(f"{self.rate:g} requests/s (burst {self.burst})")
        if self.concurrent is not None:
            parts.append(f"{self.concurrent} at once")
        if self.streams is not None:
            parts.append(f"{self.streams} streams at once")
        return ", ".join(parts) or "no limit"


@dataclass(frozen=True, slots=True)
class Limited:
    """A start refused: which limit (`rate`, `concurrent`, `streams`), and when to try again."""

    limit: str
    retry_after: int  # seconds, rounded up, at least 1
    message: str


def limit_refusal(operation: str, policy: str, limited: Limited) -> Refusal:
    """The one answer to a start over a limit: 429, Retry-After, Docker's error body; the access
    log's decision reads `deny:POLICY:limit`, the audit record's reason `limit: rate`."""
    message = (
        f"dockgate: {operation} refused by the limits of policy {policy}: {limited.message}; "
        f"try again in {limited.retry_after} s"
    )
    return Refusal(429, message, "limit", f"limit: {limited.limit}", limited.retry_after)


@dataclass(slots=True)
class _Caller:
    """One caller's state under one policy."""

    tokens: float
    at: float  # when `tokens` was last brought up to date
    full_at: float  # when the bucket is full again: from then on the entry is as good as none
    running: int = 0  # ordinary exchanges holding a slot
    streaming: int = 0  # streams holding a slot


class Slot:
    """A started exchange's hold on its caller's concurrency; `release` once it ends."""

    __slots__ = ("_caller", "_stream")

    def __init__(self, caller: _Caller | None, stream: bool) -> None:
        self._caller = caller
        self._stream = stream

    def release(self) -> None:
        caller, self._caller = self._caller, None
        if caller is None:
            return  # released already (every ending of an exchange may call it)
        if self._stream:
            caller.streaming -= 1
        else:
            caller.running -= 1

    @property
    def held(self) -> bool:
        return self._caller is not None


def caller_key(identity: Identity, counted_source: str) -> str:
    """Whom a caller's limits count: an authenticated identity by its method and name; anyone
    else (anonymous, or a gateway without authentication) by source, as the failure throttle
    counts sources (`counted_source`: admission.throttle_source, a unix client by its uid)."""
    if identity.authenticated:
        return f"{identity.method}:{identity.name}"
    if identity.method == CONTAINER:
        # A caller its unix-socket peer names (auth/peerlookup.py): each container apart (by
        # its ID, which a rename keeps), not every root container as "unix uid 0".
        return f"container:{identity.detail}"
    if identity.method == PROCESS:
        return f"process:{identity.name}"
    return "source:" + source_key(counted_source)


class Limiter:
    """Every caller's buckets and slots in this process (one per worker)."""

    def __init__(self, *, max_callers: int = MAX_CALLERS) -> None:
        self._callers: dict[tuple[str, str], _Caller] = {}
        self._max_callers = max_callers
        # The size at which room is made next: `max_callers`, or, when more callers than that
        # hold slots (many open connections), twice what was left, so that each new caller
        # does not cost a pass over the table.
        self._room_at = max_callers
        self._next_sweep = -math.inf  # (the first start sweeps an empty table)

    def __len__(self) -> int:
        return len(self._callers)

    def start(
        self,
        policy: str,
        key: str,
        limits: Limits,
        *,
        operation: str,
        stream: bool,
        now: float,
    ) -> Slot | Limited:
        """An exchange of `operation` starts now for caller `key` under `policy`: its slot, or
        the limit that refuses it (nothing spent then)."""
        if now >= self._next_sweep:
            self._sweep(now)
        caller = self._callers.get((policy, key))
        if caller is None:
            if len(self._callers) >= self._room_at:
                self._make_room(now)
            caller = self._callers[(policy, key)] = _Caller(float(limits.burst), now, now)
        if stream:
            if limits.streams is not None and caller.streaming >= limits.streams:
                return Limited(
                    "streams", 1, f"at most {limits.streams} streams at once; one must end first"
                )
        elif limits.concurrent is not None and caller.running >= limits.concurrent:
            return Limited(
                "concurrent", 1, f"at most {limits.concurrent} requests at once; wait for one"
            )
        rate = limits.rate
        if rate is not None:
            burst = limits.burst
            # Refilled since, up to the burst (`now` is the event loop's monotonic clock).
            tokens = caller.tokens + (now - caller.at) * rate
            if tokens > burst:
                tokens = float(burst)
            cost = limits._table.get(operation, 1)
            if tokens < cost:
                caller.tokens, caller.at = tokens, now
                wait = max(1, math.ceil((cost - tokens) / rate - 1e-9))
                what = f"{rate:g} requests/s (burst {burst})"
                if cost != 1:
                    what += f"; {operation} costs {cost}"
                return Limited("rate", wait, f"limited to {what}")
            tokens -= cost
            caller.tokens, caller.at = tokens, now
            caller.full_at = now + (burst - tokens) / rate
        if stream:
            caller.streaming += 1
        else:
            caller.running += 1
        return Slot(caller, stream)

    def _sweep(self, now: float) -> None:
        """Drop the entries that are the same as none: bucket full again, no slot held."""
        self._next_sweep = now + SWEEP_SECONDS
        idle = [k for k, c in self._callers.items() if _idle(c, now)]
        for k in idle:
            del self._callers[k]

    def _make_room(self, now: float) -> None:
        self._sweep(now)
        if len(self._callers) >= self._max_callers:
            busy = {k: c for k, c in self._callers.items() if c.running or c.streaming}
            self._callers = busy  # (a slot's release still finds its own entry object)
        self._room_at = max(self._max_callers, 2 * len(self._callers))


def _idle(caller: _Caller, now: float) -> bool:
    return caller.running == 0 and caller.streaming == 0 and now >= caller.full_at
