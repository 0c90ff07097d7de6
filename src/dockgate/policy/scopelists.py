"""Lists and the event stream under an object scope (policy/scopes.py): the answer shows only
the objects the scope covers.

A list allowed only by rules with `objects:` (ContainerList, NetworkList, VolumeList,
ServiceList, SecretList, ConfigList, TaskList) is held whole and filtered here, item by item,
on what each item carries (docs/policy.md, "Lists and events under a scope"):

- containers: `Labels`, and the primary name, the one of `Names` without a further `/` (the
  others are link aliases, `/other/alias`, names in another container's namespace: moby
  v20.10.24 daemon/list.go transformContainer, container.Names);
- networks, volumes: `Labels`, `Name`; services, secrets, configs: `Spec.Labels`, `Spec.Name`;
- tasks follow their service: their `ServiceID` must be a covered service, which takes one
  look-up of the daemon's service list per task list (`covered_services`).

What the daemon would apply among every object, telling of uncovered ones by its effect or
its error, is taken out of the forwarded request and applied here to the filtered answer
(`GatewayQuery`, `gateway_query`): ContainerList's `limit`, TaskList's `service` filter
(resolved among the covered services only: `service_filter_ids`). A kept item's references to
objects others attached to it (a container's link aliases, a network's containers) are taken
out too (policy/scopeanswers.py).

Where every rule of the scope requires the same exact label (or the same single stack), the
label is also merged into the request's `filters` (`narrowed_target`): the daemon then answers
less. That only cuts the answer: the filtering here is what decides.

The event stream is filtered one event at a time (`scoped_event`), from what the event itself
carries; a stream cannot wait for look-ups without holding every later event behind them, and
an object's `destroy` cannot be looked up at all, so nothing is looked up:

- container events (exec ones too) carry the container's labels and name in
  `Actor.Attributes` (moby daemon/events.go LogContainerEventWithAttributes: labels copied
  first, then `image` and `name` written over them; the action's own attributes, `exitCode`,
  `signal`, `execID`... passed in before). The attributes the daemon sets itself for the
  action are not taken as labels: a condition on such a key cannot be proven from an event,
  and such an event is dropped;
- network, volume, service, secret and config events carry a name and no labels
  (logNetworkEvent, LogVolumeEvent, logServiceEvent...): they pass only under a rule that
  covers the name alone (`names:` without `labels:` or `stacks:`), and without the
  `container` attribute of a network's `connect`/`disconnect` and a volume's `mount`/
  `unmount` (a container the event cannot show to be covered) and a mount's details;
- every other type (image, daemon, plugin, node, builder) is about no object a scope covers:
  dropped. So are events without a name (a prune's `reclaimed` report).

Pure functions: the relay (relay/steps.py, relay/connection.py) carries them out, the plan
(policy/plan.py) asks `filters_answer` and `scoped_list_head`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote_plus, urlencode

from dockgate.api.daemonjson import daemon_array, daemon_object
from dockgate.body.redact import (
    CONTAINER_ACTION_ATTRIBUTES,
    CONTAINER_ATTRIBUTES,
    REDACTED_STREAMS,
)
from dockgate.http.query import query_pairs, query_value
from dockgate.http.request import RequestHead, with_target
from dockgate.policy.modes import ENFORCE
from dockgate.policy.scopeanswers import own_names, without_members
from dockgate.policy.scopes import SCOPED_LISTS, STACK_LABEL, Scope, labels_of
from dockgate.refusal import Refusal

if TYPE_CHECKING:
    from dockgate.policy.gatekeeper import Verdict
    from dockgate.policy.plan import Allowed, Trace

# The lists whose answers are filtered here (every scoped list but the event stream).
FILTERED_LISTS = frozenset(SCOPED_LISTS - REDACTED_STREAMS)
# Lists whose daemon-side `label` filter reads the labels the scope matches (a task's labels
# are its own, not its service's: not narrowed).
NARROWED = frozenset(FILTERED_LISTS - {"TaskList"} | REDACTED_STREAMS)
# ContainerList filters (and docker-py's legacy parameters) that name a container the daemon
# finds or fails on (moby daemon/list.go foldFilter): under a scope they would tell whether an
# uncovered container exists, and which were created before or after it.
ORDERING_FILTERS = ("since", "before")
# The daemon's task list answers 404 with this for a `service` it cannot resolve, 400 with the
# second for one several services fit (moby daemon/cluster/helpers.go getService).
SERVICE_MISSING = "service {} not found"
SERVICE_AMBIGUOUS = "service {} is ambiguous ({} matches found)"
# Go's strconv.Atoi: an optional sign and ASCII digits (the daemon reads `limit` so).
_GO_INT = re.compile(r"[+-]?[0-9]+")
_GO_INT_MAX = 2**63 - 1

# Event types named by the object's name alone, and what is taken out of them.
_NAMED_TYPES = frozenset({"network", "volume", "service", "secret", "config"})
_FOREIGN_ATTRIBUTES = frozenset({"container", "destination", "propagation", "read/write"})


class ScopeFilterError(ValueError):
    """An answer that cannot be filtered: it is not passed on (502)."""


@dataclass(frozen=True, slots=True)
class GatewayQuery:
    """What of a scoped list's query the gateway applies itself, to the filtered answer,
    having taken it out of the request the daemon gets: applied by the daemon, it would be
    applied among every object, and its effect (or its error) would tell of uncovered ones.

    - `limit`: ContainerList's `limit`, when over 0: the daemon lists the N newest
      containers, counting uncovered ones (moby daemon/list.go: `limit` also lists stopped
      containers, as `all`). The request goes on with `all=1` and no `limit`; the filtered
      answer, in the daemon's order (newest first), is cut to N here: exactly what the
      daemon would answer if only the covered containers existed.
    - `services`: TaskList's `service` filter values. The daemon resolves each among every
      service (a 404 for one it cannot find, a 400 "ambiguous (N matches found)" counting
      services out of the scope); here each is resolved among the covered services only
      (full ID, name, ID prefix, as getService), the tasks kept by the resolved full IDs,
      and a value that fits none answered as the daemon answers a missing service, whether
      it is missing or out of the scope (`service_filter_ids`).
    """

    limit: int | None = None
    services: tuple[str, ...] = ()


# ----- the plan's questions ---------------------------------------------------------------------


def scoped_list_hidden(verdict: Verdict) -> bool:
    """Whether this allowed request is a list (or the event stream) the scope filters: what
    warn and audit mode relay unfiltered, noting it (`would_hide`)."""
    return verdict.scope is not None and verdict.operation in SCOPED_LISTS


def filters_answer(allowed: Allowed) -> Scope | None:
    """The scope a 200 answer to this request is filtered to; None: not filtered (no scope,
    not a scoped list, or warn and audit mode, which rewrite no answer)."""
    scope = allowed.verdict.scope
    if scope is None or allowed.mode != ENFORCE or allowed.operation not in SCOPED_LISTS:
        return None
    return scope


def scoped_list_head(
    head: RequestHead, allowed: Allowed, trace: Trace | None = None
) -> tuple[RequestHead, Allowed] | Refusal:
    """A scoped list's request as it goes on: refused when a filter would tell of an
    uncovered object (`ordering_problem`; in warn and audit mode recorded instead), narrowed
    by the labels every covered object carries (`common_labels`). Anything else is returned
    as it came."""
    scope = allowed.verdict.scope
    operation = allowed.operation
    if scope is None or operation not in SCOPED_LISTS:
        return head, allowed
    problem = ordering_problem(operation, head.target)
    if problem is not None:
        refusal = allowed.policy_denial("policy", problem)
        waived = allowed.waived(refusal)
        if waived is None:
            return refusal
        if trace is not None:
            trace.append(("scope", f"{waived.mode} mode: would deny, {problem}"))
        allowed = waived
    if filters_answer(allowed) is None:
        if trace is not None:
            trace.append(("scope", f"{allowed.mode} mode: the answer is not filtered"))
        return head, allowed
    if trace is not None:
        what = "each event" if operation in REDACTED_STREAMS else "the answer"
        how = ", tasks by their service (the service list is asked)"
        trace.append(
            (
                "scope",
                f"{what} filtered to {scope.describe()}{how if operation == 'TaskList' else ''}",
            )
        )
    try:
        taken = gateway_query(operation, head.target)
    except ValueError as exc:
        return Refusal(400, f"dockgate: {exc}", "scope", "bad filters")
    if taken is not None:
        target, query = taken
        head, allowed = with_target(head, target), replace(allowed, scoped_query=query)
        if trace is not None:
            what = "limit" if query.limit is not None else "service filter"
            trace.append(("scope", f"the {what} applied by dockgate, among covered objects"))
    labels = common_labels(scope) if operation in NARROWED else []
    if not labels:
        return head, allowed
    try:
        target = narrowed_target(head.target, labels)
    except ValueError as exc:
        message = f"dockgate: {exc}"
        return Refusal(400, message, "scope", "bad filters")
    if trace is not None:
        trace.append(("scope", f"narrowed on the daemon by label {', '.join(labels)}"))
    return with_target(head, target), allowed


# ----- lists ----------------------------------------------------------------------------------


def primary_name(names: object) -> str:
    """A listed container's own name, without its `/`: the one of `Names` that has no further
    `/` (link aliases are `/other/alias`). "" when there is none."""
    if isinstance(names, list):
        for name in names:
            if isinstance(name, str) and name.startswith("/") and "/" not in name[1:]:
                return name[1:]
    return ""


ItemFacts = Callable[[Mapping[str, Any]], tuple[dict[str, str], str]]


def _spec_item(item: Mapping[str, Any]) -> tuple[dict[str, str], str]:
    spec = item.get("Spec")
    if not isinstance(spec, dict):
        return {}, ""
    name = spec.get("Name")
    return labels_of(spec.get("Labels")), name if isinstance(name, str) else ""


def _plain_item(item: Mapping[str, Any]) -> tuple[dict[str, str], str]:
    name = item.get("Name")
    return labels_of(item.get("Labels")), name if isinstance(name, str) else ""


def _container_item(item: Mapping[str, Any]) -> tuple[dict[str, str], str]:
    return labels_of(item.get("Labels")), primary_name(item.get("Names"))


# What each list's item is matched on: (labels, name).
_ITEM_FACTS: dict[str, ItemFacts] = {
    "ContainerList": _container_item,
    "NetworkList": _plain_item,
    "VolumeList": _plain_item,
    "ServiceList": _spec_item,
    "SecretList": _spec_item,
    "ConfigList": _spec_item,
}


# What of a kept item names objects out of the scope, taken out (policy/scopeanswers.py).
_ITEM_SCRUBS: dict[str, Callable[[dict[str, Any]], None]] = {
    "ContainerList": own_names,
    "NetworkList": without_members,
}


def _covered(items: list[Any], facts: ItemFacts, scope: Scope) -> list[Any]:
    return [item for item in items if isinstance(item, dict) and scope.covers(*facts(item))]


def _scrubbed(operation: str, items: list[Any]) -> list[Any]:
    scrub = _ITEM_SCRUBS.get(operation)
    if scrub is not None:
        for item in items:
            scrub(item)
    return items


def filtered_list(operation: str, body: bytes, scope: Scope, limit: int | None = None) -> bytes:
    """The daemon's 200 answer to a list (not TaskList) with only the items `scope` covers,
    the first `limit` of them (in the daemon's order) when one is given (`GatewayQuery`).
    ScopeFilterError for an answer that is not the JSON the daemon sends."""
    facts = _ITEM_FACTS[operation]
    try:
        if operation != "VolumeList":
            entries = _scrubbed(operation, _covered(daemon_array(operation, body), facts, scope))
            return json.dumps(entries if limit is None else entries[:limit]).encode() + b"\n"
        document = daemon_object(operation, body)
    except (ValueError, TypeError) as exc:
        raise ScopeFilterError(str(exc)) from None
    # `{"Volumes": [...] or null, "Warnings": [...] or null}` (moby api/types/volume).
    volumes = document.get("Volumes")
    if volumes is not None and not isinstance(volumes, list):
        raise ScopeFilterError("the daemon's VolumeList answer has no list of volumes")
    document["Volumes"] = _covered(volumes or [], facts, scope)
    return json.dumps(document).encode() + b"\n"


def covered_services(
    status: int, services: object, scope: Scope
) -> tuple[frozenset[str], list[dict[str, Any]]]:
    """From the daemon's answer to its service list (`GET /services`): the IDs of the
    services `scope` covers, and every listed service (to resolve a task list's `service`
    filter). ScopeFilterError for an answer that is not a 200 with a list."""
    if status != 200:
        raise ScopeFilterError(f"the daemon answered {status} to its service list")
    if not isinstance(services, list):
        raise ScopeFilterError("the daemon's service list is not a JSON array")
    every = [s for s in services if isinstance(s, dict) and isinstance(s.get("ID"), str)]
    covered = frozenset(s["ID"] for s in every if scope.covers(*_spec_item(s)))
    return covered, every


def service_filter_ids(
    references: tuple[str, ...], covered: frozenset[str], services: list[dict[str, Any]]
) -> frozenset[str] | Refusal:
    """A task list's `service` filter values (`GatewayQuery.services`, in the order the
    daemon resolves them) resolved among the covered services only, as getService resolves
    them among all: a full ID, else an exact name, else an ID prefix. The full IDs to keep
    tasks of; or the daemon's own answer for the first value that fits no covered service
    (404, missing and out of scope alike) or several (400, counting covered ones only)."""
    mine = [s for s in services if s.get("ID") in covered]
    ids: set[str] = set()
    for reference in references:
        fits = [s["ID"] for s in mine if s["ID"] == reference]
        fits = fits or [s["ID"] for s in mine if _spec_item(s)[1] == reference]
        fits = fits or [s["ID"] for s in mine if str(s["ID"]).startswith(reference)]
        if not fits:
            return Refusal(404, SERVICE_MISSING.format(reference), "scope", "scope")
        if len(fits) > 1:
            message = SERVICE_AMBIGUOUS.format(reference, len(fits))
            return Refusal(400, message, "scope", "scope")
        ids.add(fits[0])
    return frozenset(ids)


def filtered_tasks(body: bytes, covered: frozenset[str], services: frozenset[str] | None) -> bytes:
    """The daemon's 200 answer to a task list with only the tasks of covered services (of
    `services` among them, when the caller's `service` filter named some)."""
    try:
        entries = daemon_array("TaskList", body)
    except (ValueError, TypeError) as exc:
        raise ScopeFilterError(str(exc)) from None
    kept = [
        t
        for t in entries
        if isinstance(t, dict)
        and t.get("ServiceID") in covered
        and (services is None or t.get("ServiceID") in services)
    ]
    return json.dumps(kept).encode() + b"\n"


def _filter_values(target: str, key: str) -> list[str]:
    """The values of one `filters` key of a target (the daemon reads the first `filters`), in
    either of its JSON forms; [] when the filters cannot be read (the daemon then answered
    400, never the 200 this is asked about)."""
    given = next((v for k, v in query_pairs(target.partition("?")[2]) if k == "filters"), "")
    try:
        filters = json.loads(given) if given else {}
    except (ValueError, RecursionError):
        return []
    values = filters.get(key) if isinstance(filters, dict) else None
    if isinstance(values, (list, dict)):
        return [v for v in values if isinstance(v, str)]
    return []


# ----- the request: narrowed where the scope allows, refused where a filter would tell -------


def ordering_problem(operation: str, target: str) -> str | None:
    """Why a list may not be asked as it is under a scope: a ContainerList `since`/`before`
    (a filter or a legacy parameter) names a container the daemon finds or fails on."""
    if operation != "ContainerList":
        return None
    query = target.partition("?")[2]
    legacy = [k for k, v in query_pairs(query) if k in ORDERING_FILTERS and v]
    named = [k for k in ORDERING_FILTERS if _filter_values(target, k)]
    if legacy or named:
        return (
            "since/before filters name containers the rules' objects: may not cover; "
            "they are not accepted under an object scope"
        )
    return None


def gateway_query(operation: str, target: str) -> tuple[str, GatewayQuery] | None:
    """A scoped list's target without what the gateway applies itself (`GatewayQuery`), and
    that: ContainerList's `limit` over 0, TaskList's `service` filter. None: nothing to take
    (absent, or a value the daemon fails on before listing anything: its error then tells
    nothing of other objects, and is left to it)."""
    query = target.partition("?")[2]
    if operation == "ContainerList":
        given = query_value(query, "limit")  # r.Form.Get("limit"), then strconv.Atoi
        if not given or not _GO_INT.fullmatch(given):
            return None
        limit = int(given)
        if limit <= 0 or limit > _GO_INT_MAX:
            return None  # no limit at all for the daemon (or its range error)
        # `limit` lists stopped containers too, as `all` does (daemon/list.go).
        return _without(target, {"limit", "all"}, ["all=1"]), GatewayQuery(limit=limit)
    if operation == "TaskList":
        written = query_value(query, "filters")  # the daemon reads the first `filters`
        try:
            filters = json.loads(written) if written else None
        except (ValueError, RecursionError):
            return None
        if not isinstance(filters, dict) or "service" not in filters:
            return None
        given = filters.pop("service")
        # Both JSON forms: {"service": ["a"]} and {"service": {"a": true}} (filters.FromJSON).
        if not isinstance(given, (list, dict)) or not all(isinstance(v, str) for v in given):
            return None
        try:
            rest = json.dumps(filters, separators=(",", ":"))
        except (ValueError, RecursionError):
            return None
        stripped = _without(target, {"filters"}, ["filters=" + quote(rest, safe="")])
        return stripped, GatewayQuery(services=tuple(given))
    return None


def _without(target: str, keys: set[str], added: list[str]) -> str:
    """`target` without its query pairs named one of `keys` (as the daemon decodes the
    names), with the `added` pairs (already encoded) at its end; the others kept as they
    came."""
    path, _, query = target.partition("?")
    kept = [
        pair
        for pair in query.split("&")
        if pair and unquote_plus(pair.partition("=")[0], errors="replace") not in keys
    ]
    kept.extend(added)
    return path + ("?" + "&".join(kept) if kept else "")


def _exact(pattern: re.Pattern[str]) -> str | None:
    """The value a pattern compiled by scopes.compile_pattern matches, when it matches one
    value only ("*" not used); "*" alone: "" (any value, the label present)."""
    source = pattern.pattern
    if source == ".*":
        return ""
    literal: list[str] = []
    index = 0
    while index < len(source):
        char = source[index]
        if char == "\\":  # re.escape writes every special character as `\` + the character
            literal.append(source[index + 1])
            index += 2
            continue
        if char == ".":  # an unescaped `.` is only ever the start of a `*`'s `.*`
            return None
        literal.append(char)
        index += 1
    return "".join(literal)


def common_labels(scope: Scope) -> list[str]:
    """Daemon `label` filter values every object the scope covers matches: `key=value` for an
    exact label, `key` for `"*"`, `com.docker.stack.namespace=S` for a single stack, when
    every rule of the scope requires the same. [] when they share none."""
    shared: set[str] | None = None
    for _, rule in scope.rules:
        own: set[str] = set()
        for key, pattern in rule.labels:
            value = _exact(pattern)
            if value is None or "=" in key:
                continue  # (the daemon splits `k=v` at its first `=`)
            own.add(f"{key}={value}" if value else key)
        if rule.stacks is not None and len(rule.stacks) == 1:
            own.add(f"{STACK_LABEL}={next(iter(rule.stacks))}")
        shared = own if shared is None else shared & own
    return sorted(shared or ())


def narrowed_target(raw_target: str, labels: list[str]) -> str:
    """The target with `labels` merged into its `filters` `label` values (the daemon reads the
    first `filters`; both of its JSON forms kept as they came). ValueError for filters that
    cannot be read (a 400, as the daemon's)."""
    path, _, query = raw_target.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    given = next((value for name, value in pairs if name == "filters"), "")
    try:
        filters = json.loads(given) if given else {}
    except RecursionError:
        raise ValueError("filters is nested too deeply") from None
    if not isinstance(filters, dict):
        raise ValueError("filters must be a JSON object")  # noqa: TRY004 - a 400
    present = filters.get("label")
    map_form = any(isinstance(value, dict) for value in filters.values())
    if isinstance(present, dict):
        filters["label"] = {**present, **dict.fromkeys(labels, True)}
    elif isinstance(present, list):
        filters["label"] = [*present, *(v for v in labels if v not in present)]
    elif present is None:
        filters["label"] = dict.fromkeys(labels, True) if map_form else list(labels)
    else:
        raise ValueError("filters.label must be a list")
    try:
        written = json.dumps(filters, separators=(",", ":"))
    except RecursionError:
        raise ValueError("filters is nested too deeply") from None
    kept = [(name, value) for name, value in pairs if name != "filters"]
    kept.append(("filters", written))
    return path + "?" + urlencode(kept, quote_via=quote)


# ----- events -----------------------------------------------------------------------------------


def scoped_event(event: dict[str, Any], scope: Scope) -> dict[str, Any] | None:
    """One event of `GET /events` as a scoped caller sees it: None when it is not proven, from
    the event alone, to be about an object `scope` covers (module docstring)."""
    kind = event.get("Type")
    actor = event.get("Actor")
    attributes = actor.get("Attributes") if isinstance(actor, dict) else None
    if not isinstance(attributes, dict) or not isinstance(actor, dict):
        return None
    if kind == "container":
        name = attributes.get("name")
        if not isinstance(name, str) or not name:
            return None
        # "exec_start: sh -c ..." and "health_status: healthy" carry more after the colon.
        action = str(event.get("Action", "")).partition(":")[0]
        # (the daemon's own attributes, body/redact.py: a label of such a name is not what the
        # event says)
        own = CONTAINER_ATTRIBUTES | CONTAINER_ACTION_ATTRIBUTES.get(action, frozenset())
        labels = {k: v for k, v in labels_of(attributes).items() if k not in own}
        return event if scope.covers(labels, name) else None
    if kind in _NAMED_TYPES:
        # A volume's events name it by their actor's ID (LogVolumeEvent(v.Name(), ...)).
        name = actor.get("ID") if kind == "volume" else attributes.get("name")
        if not isinstance(name, str) or not name or not scope.covers({}, name):
            return None
        actor["Attributes"] = {k: v for k, v in attributes.items() if k not in _FOREIGN_ATTRIBUTES}
        return event
    return None


def event_filter(scope: Scope) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    """`scoped_event` bound to one scope, for the stream rewriter (body/redact.py)."""
    return lambda event: scoped_event(event, scope)
