"""`dockgate learn`: the tightest policy file that allows what an audit log shows clients did.

Sans-IO: audit records (observe/audit.py, one JSON object per decision) go in, a policy file
(YAML text, with comments) comes out. Only requests the gateway forwarded are learned
(`"decision": "allow"`, which in audit and warn mode includes what the policy would have denied):
a request the gateway refused never reached the daemon, so nothing shows the client needed it.

Per identity: one `allow` rule per operation used (by `operations:`, never whole sections),
`read_only: true` when only reads were seen, and the guardrails the recorded bodies need and
nothing more: host paths (read-only where every use was), capabilities, devices, host namespaces,
image repositories, exec as root, privileged. Each rule and guardrail carries a comment with how
many requests needed it and from which clients (source address and User-Agent). Ownership is
suggested in a comment where every container the client touched by name is one it created.

What the audit log does not say cannot be learned: the daemon's answers (the IDs of created
objects), request bodies other than those `body_details` keeps (volume and network creates),
and the Dockerfile of a build.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from dockgate.api.routes import OPERATIONS
from dockgate.body.guardrails import image_repository, normalize_capability
from dockgate.observe.audit import ELLIPSIS

# Operations that make an object the client may then address by the name it gave.
_CREATES_BY_NAME = frozenset({"ContainerCreate"})
# Sections whose objects ownership mode isolates and whose names the audit log records.
_OWNED_SECTIONS = frozenset({"containers"})
_MAX_CLIENTS_SHOWN = 3
_POLICY_NAME = re.compile(r"[^A-Za-z0-9._-]")
_HEX_ID = re.compile(r"[0-9a-f]{12,64}")


# ----- reading the audit log --------------------------------------------------------------------


@dataclass(slots=True)
class ReadResult:
    records: list[dict[str, object]] = field(default_factory=list)
    bad_lines: int = 0  # not a JSON object (a last line cut by a running gateway, say)


def read_records(lines: Iterable[str], into: ReadResult | None = None) -> ReadResult:
    """Every JSON object of `lines`; other lines (a partial last line) are counted, not fatal."""
    result = into if into is not None else ReadResult()
    for line in lines:
        text = line.strip()
        if not text:
            continue
        try:
            value = json.loads(text)
        except ValueError:
            result.bad_lines += 1
            continue
        if isinstance(value, dict):
            result.records.append(value)
        else:
            result.bad_lines += 1
    return result


# ----- who is who -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class Caller:
    """An identity as the audit record names it: `identity` and `auth`."""

    name: str
    auth: str

    def binding(self, policy: str) -> str | None:
        """The binding line for this caller; None for `-` (no authentication: `default:`)."""
        if self.auth == "none":
            return None
        if self.auth == "anonymous":
            return f"{{policy: {policy}, anonymous: true}}"
        key = "certificates" if self.auth == "certificate" else "users"
        return f"{{policy: {policy}, {key}: [{_quote(self.name)}]}}"


# What `--identity` says to learn for the callers that sent no credentials.
ANONYMOUS_SELECTOR = ":anonymous"


def _selected(caller: Caller, only: str) -> bool:
    if caller.auth in ("anonymous", "none"):
        return only == ANONYMOUS_SELECTOR
    return caller.name == only


def caller_of(record: Mapping[str, object]) -> Caller:
    auth = str(record.get("auth", "none"))
    # A binding's `users:` takes a password login and a token acting as that user alike
    # (policy.md, bindings): one caller, one policy.
    if auth == "token":
        auth = "basic"
    return Caller(str(record.get("identity", "-")), auth)


def _client(record: Mapping[str, object]) -> str:
    source = str(record.get("source", "?"))
    agent = record.get("user_agent")
    return f"{source} ({agent})" if isinstance(agent, str) and agent else source


# ----- usage ------------------------------------------------------------------------------------


@dataclass(slots=True)
class Usage:
    """How many requests needed something, and from which clients."""

    count: int = 0
    clients: dict[str, int] = field(default_factory=dict)

    def add(self, client: str) -> None:
        self.count += 1
        self.clients[client] = self.clients.get(client, 0) + 1

    def comment(self) -> str:
        shown = sorted(self.clients, key=lambda c: (-self.clients[c], c))
        text = ", ".join(shown[:_MAX_CLIENTS_SHOWN])
        if len(shown) > _MAX_CLIENTS_SHOWN:
            text += f", +{len(shown) - _MAX_CLIENTS_SHOWN} more"
        noun = "request" if self.count == 1 else "requests"
        return _comment_text(f"{self.count} {noun}, from {text}")


@dataclass(slots=True)
class HostPathUse:
    usage: Usage = field(default_factory=Usage)
    writable: bool = False  # some use was read-write


@dataclass(slots=True)
class Learned:
    """What one caller was seen doing."""

    caller: Caller
    operations: dict[str, Usage] = field(default_factory=dict)
    writes: bool = False
    host_paths: dict[str, HostPathUse] = field(default_factory=dict)
    capabilities: dict[str, Usage] = field(default_factory=dict)
    devices: dict[str, Usage] = field(default_factory=dict)
    namespaces: dict[str, Usage] = field(default_factory=dict)
    images: dict[str, Usage] = field(default_factory=dict)
    tags: dict[str, set[str]] = field(default_factory=dict)  # repository -> references seen
    privileged: Usage = field(default_factory=Usage)
    exec_privileged: Usage = field(default_factory=Usage)
    exec_root: Usage = field(default_factory=Usage)  # execs not as a numeric non-root user
    exec_users: dict[str, Usage] = field(default_factory=dict)
    created: set[str] = field(default_factory=set)  # names given to ContainerCreate
    touched: set[str] = field(default_factory=set)  # container names/IDs addressed
    unreadable_bodies: int = 0  # body_details "unparsable" / "too large to record"
    unlearned: set[str] = field(default_factory=set)  # values seen but not learned, and why


class Learner:
    """Feed it audit records (`add`); `document` writes the policy file."""

    def __init__(self) -> None:
        self.callers: dict[Caller, Learned] = {}
        self.seen = 0
        self.refused = 0  # refused by the gateway: never reached the daemon, not learned
        self.unknown: dict[str, int] = {}  # requests the route table could not place

    def add(self, record: Mapping[str, object]) -> None:
        self.seen += 1
        if record.get("decision") != "allow":
            self.refused += 1
            return
        operation = str(record.get("operation", "-"))
        found = OPERATIONS.get(operation)
        if found is None:
            key = f"{record.get('method', '?')} {record.get('path', '?')}"
            self.unknown[key] = self.unknown.get(key, 0) + 1
            return
        caller = caller_of(record)
        learned = self.callers.get(caller)
        if learned is None:
            learned = self.callers[caller] = Learned(caller)
        client = _client(record)
        learned.operations.setdefault(operation, Usage()).add(client)
        learned.writes = learned.writes or found.writes
        obj = record.get("object")
        if operation in _CREATES_BY_NAME and isinstance(obj, str):
            learned.created.add(obj)
        elif found.section in _OWNED_SECTIONS and isinstance(obj, str):
            learned.touched.add(obj)
        if (
            operation == "ImageCreate"
            and isinstance(obj, str)
            and "fromImage=" in str(record.get("path", ""))
        ):
            _image(learned, obj, client)
        details = record.get("details")
        status = record.get("status")
        if not (isinstance(status, int) and status < 400):
            # The daemon refused it (or it never ended): what its body asked for was not done,
            # so it widens no guardrail (the operation itself is learned: clients rely on
            # answers such as an inspect's 404).
            details = None
        if isinstance(details, dict):
            if "body" in details:
                learned.unreadable_bodies += 1
            elif operation == "ContainerCreate":
                _container(learned, details, client)
            elif operation == "ContainerExec":
                _exec(learned, details, client)
            elif operation in ("ServiceCreate", "ServiceUpdate"):
                _service(learned, details, client)

    def document(self, only: str | None = None, sources: Iterable[str] = ()) -> str:
        """The policy file, YAML. `only`: just the callers of that identity name, who logged
        in (a user, token or certificate; callers without credentials are named by
        ANONYMOUS_SELECTOR only: a user may well be called "anonymous"). Raises LearnError
        when there is nothing to write."""
        chosen = [
            learned
            for caller, learned in sorted(self.callers.items())
            if only is None or _selected(caller, only)
        ]
        if not chosen:
            raise LearnError(
                f"no request of identity {only!r} was forwarded"
                if only is not None
                else "no forwarded request to learn from"
            )
        names = _policy_names([learned.caller for learned in chosen])
        lines = [
            "# Written by dockgate learn"
            + (f" from {', '.join(_comment_text(s) for s in sources)}" if sources else ""),
            f"# {self.seen} audit records: {sum(_total(lr) for lr in chosen)} learned, "
            f"{self.refused} refused by the gateway (not learned).",
            "# Review it, then run it with `mode: warn` before enforcing (docs/rollout.md).",
        ]
        for key, count in sorted(self.unknown.items()):
            lines.append(f"# not learned (no Engine API operation): {_comment_text(key)} x{count}")
        lines.append("version: 1")
        bindings = [
            (learned.caller, names[learned.caller])
            for learned in chosen
            if learned.caller.binding(names[learned.caller]) is not None
        ]
        unbound = [learned.caller for learned in chosen if learned.caller.auth == "none"]
        if unbound and bindings:
            raise LearnError(
                "the log mixes requests with and without authentication; learn one with --identity"
            )
        if unbound:
            lines.append(f"default: {names[unbound[0]]}")
        else:
            lines.append("bindings:")
            for caller, name in bindings:
                lines.append(f"  - {caller.binding(name)}")
        lines.append("policies:")
        for learned in chosen:
            lines += _policy_lines(names[learned.caller], learned)
        return "\n".join(lines) + "\n"


class LearnError(ValueError):
    """Nothing to learn, or nothing one policy file can say."""


def _total(learned: Learned) -> int:
    return sum(usage.count for usage in learned.operations.values())


def _policy_names(callers: list[Caller]) -> dict[Caller, str]:
    names: dict[Caller, str] = {}
    taken: set[str] = set()
    for caller in callers:
        if caller.auth == "none":
            base = "learned"
        else:
            base = _POLICY_NAME.sub("-", caller.name).strip("-.") or "learned"
        name, n = base, 2
        while name in taken:
            name, n = f"{base}-{n}", n + 1
        taken.add(name)
        names[caller] = name
    return names


# ----- bodies -----------------------------------------------------------------------------------

# What `images:` entries match as patterns (guardrails.py, fnmatch): never learned from a name.
_PATTERN_CHARACTERS = frozenset("*?[]")


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, list):
        yield from (item for item in value if isinstance(item, str))


def _image(learned: Learned, reference: str, client: str) -> None:
    if _PATTERN_CHARACTERS.intersection(reference):
        # No image reference holds these; in `images:` they would be a pattern (fnmatch).
        learned.unlearned.add(f"image {reference}")
        return
    repository = image_repository(reference)
    if repository is None:
        # By image ID: its repository cannot be told, and `images` refuses it (guardrails.py).
        repository = reference
    learned.images.setdefault(repository, Usage()).add(client)
    learned.tags.setdefault(repository, set()).add(reference)


def _host_path(learned: Learned, path: str, read_only: bool, client: str) -> None:
    use = learned.host_paths.setdefault(path, HostPathUse())
    use.usage.add(client)
    use.writable = use.writable or not read_only


def _bind(learned: Learned, bind: str, client: str) -> None:
    """`SRC:DST[:OPTIONS]`; a source that is not absolute is a named volume. A bind the
    audit log cut short (its `:ro` may be what was cut) is not learned."""
    if bind.endswith(ELLIPSIS):
        learned.unlearned.add(f"bind {bind[:80]}")
        return
    parts = bind.split(":")
    if len(parts) < 2 or not parts[0].startswith("/"):
        return
    options = parts[2].split(",") if len(parts) > 2 else []
    _host_path(learned, parts[0], "ro" in options, client)


def _container(learned: Learned, details: Mapping[str, object], client: str) -> None:
    image = details.get("image")
    if isinstance(image, str) and image:
        _image(learned, image, client)
    if details.get("privileged") is True:
        learned.privileged.add(client)
    for bind in _strings(details.get("binds")):
        _bind(learned, bind, client)
    _mounts(learned, details.get("mounts"), client)
    for cap in _strings(details.get("cap_add")):
        learned.capabilities.setdefault(normalize_capability(cap), Usage()).add(client)
    for device in _strings(details.get("devices")):
        learned.devices.setdefault(device, Usage()).add(client)
    for namespace in _strings(details.get("namespaces")):
        learned.namespaces.setdefault(namespace, Usage()).add(client)


def _mounts(learned: Learned, mounts: object, client: str) -> None:
    if not isinstance(mounts, list):
        return
    for mount in mounts:
        if not isinstance(mount, dict) or mount.get("type") != "bind":
            continue
        source = mount.get("source")
        if isinstance(source, str) and source.startswith("/"):
            _host_path(learned, source, mount.get("read_only") is True, client)


def _exec(learned: Learned, details: Mapping[str, object], client: str) -> None:
    if details.get("privileged") is True:
        learned.exec_privileged.add(client)
    user = details.get("user")
    text = user if isinstance(user, str) else ""
    learned.exec_users.setdefault(text or "(the container's)", Usage()).add(client)
    # As guardrails.py `_exec_user` judges it: only a numeric user other than 0 is not root.
    uid = text.partition(":")[0]
    if not (uid.isascii() and uid.isdigit()) or int(uid) == 0:
        learned.exec_root.add(client)


def _service(learned: Learned, details: Mapping[str, object], client: str) -> None:
    image = details.get("image")
    if isinstance(image, str) and image:
        _image(learned, image, client)
    _mounts(learned, details.get("mounts"), client)


# ----- writing ----------------------------------------------------------------------------------


def _quote(text: str) -> str:
    """A YAML scalar: JSON's double-quoted strings are YAML's too, so any text is safe."""
    if re.fullmatch(r"[A-Za-z0-9_./-]+", text) and text[0] not in "-.":
        return text
    return json.dumps(text)


def _comment_text(text: str) -> str:
    """Client-chosen text (a User-Agent) inside a comment: one printable line."""
    return "".join(c if c.isprintable() else "?" for c in text)


def _policy_lines(name: str, learned: Learned) -> list[str]:
    out = [f"  {name}:"]
    who = learned.caller
    out.append(f"    # identity {_comment_text(who.name)} ({who.auth}): {_total(learned)} requests")
    out.append("    # mode: warn        # first run it in warn mode (docs/rollout.md)")
    for value in sorted(learned.unlearned)[:_MAX_CLIENTS_SHOWN]:
        out.append(
            f"    # not learned: {_comment_text(value)} (a pattern, or cut by the audit log)"
        )
    if not learned.writes:
        out.append("    read_only: true    # only reads were seen")
    out += _ownership_lines(learned)
    out.append("    rules:")
    for operation in sorted(learned.operations):
        usage = learned.operations[operation]
        out.append(f"      # {operation}: {usage.comment()}")
        out.append(f"      - allow: {{operations: [{operation}]}}")
    out.append("    guardrails:")
    out += _guardrail_lines(learned)
    return out


def _ownership_lines(learned: Learned) -> list[str]:
    if not learned.created:
        return []
    foreign = sorted(learned.touched - learned.created)
    if not foreign:
        return [
            f"    # ownership: true  # suggested: every container it addressed is one it created "
            f"({len(learned.created)}); see docs/policy.md, Ownership mode"
        ]
    by_id = [name for name in foreign if _HEX_ID.fullmatch(name)]
    named = [name for name in foreign if name not in by_id]
    why = []
    if named:
        shown = ", ".join(_comment_text(n) for n in named[:_MAX_CLIENTS_SHOWN])
        why.append(f"it addressed containers it did not create ({shown})")
    if by_id:
        why.append(f"{len(by_id)} containers by ID, which the audit log cannot tie to a create")
    return [f"    # ownership not suggested: {'; '.join(why)}"]


def _usage_list(key: str, items: Mapping[str, Usage], empty: str) -> list[str]:
    if not items:
        return [f"      {key}: []{empty}"]
    out = [f"      {key}:"]
    for item in sorted(items):
        out.append(f"        - {_quote(item)}    # {items[item].comment()}")
    return out


def _guardrail_lines(learned: Learned) -> list[str]:
    out: list[str] = []
    if learned.privileged.count:
        out.append(f"      privileged: true    # {learned.privileged.comment()}")
    else:
        out.append("      privileged: false")
    out += _usage_list("capabilities", learned.capabilities, "")
    if learned.devices:
        # `devices` opens every device or none: one harmless device (/dev/null) must not open
        # the host's disks. Left to the operator.
        seen = ", ".join(_comment_text(d) for d in sorted(learned.devices))
        count = sum(u.count for u in learned.devices.values())
        out.append(
            f"      devices: false    # {count} creates asked for {seen}: `devices: true` "
            "would open every device of the host; set it yourself if they need it"
        )
    else:
        out.append("      devices: false")
    if learned.host_paths:
        out.append("      host_paths:")
        for path in sorted(learned.host_paths):
            use = learned.host_paths[path]
            read_only = "false" if use.writable else "true"
            out.append(
                f"        - {{path: {_quote(path)}, read_only: {read_only}}}    "
                f"# {use.usage.comment()}"
            )
    else:
        out.append("      host_paths: []")
    out += _usage_list("namespaces", learned.namespaces, "")
    if learned.images:
        out.append("      images:")
        for repository in sorted(learned.images):
            tags = sorted(learned.tags.get(repository, ()))
            # `images` is judged by repository (guardrails.py), so the tags seen are only said.
            seen = ", ".join(_comment_text(t) for t in tags[:_MAX_CLIENTS_SHOWN])
            if len(tags) > _MAX_CLIENTS_SHOWN:
                seen += f", +{len(tags) - _MAX_CLIENTS_SHOWN} more"
            out.append(
                f"        - {_quote(repository)}    # as {seen}; "
                f"{learned.images[repository].comment()}"
            )
    else:
        out.append("      images: []    # no image was named")
    users = ", ".join(
        f"{_comment_text(user)} x{usage.count}"
        for user, usage in sorted(learned.exec_users.items())
    )
    root = "true" if learned.exec_root.count else "false"
    privileged = "true" if learned.exec_privileged.count else "false"
    note = f"    # exec users seen: {users}" if users else ""
    out.append(f"      exec: {{root: {root}, privileged: {privileged}}}{note}")
    return out
