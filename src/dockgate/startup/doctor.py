"""`dockgate doctor`'s report, as data: what was checked, who can reach each listener, what the
policy allows, what a client sets. Pure: the facts come in (startup/doctorprobe.py gathers them),
the report comes out as values, rendered as plain text to paste into an issue or as JSON.

Never a secret: credential files are counted (users, tokens), never listed; client settings
carry placeholders (`TOKEN`, `BASE64`), never a value from a file.
"""

from __future__ import annotations

import dataclasses
import json
import stat
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from dockgate.addresses import Address
from dockgate.auth.sourceaddr import SourceRules
from dockgate.body.defaults import describe
from dockgate.policy.rules import Binding, PolicySet
from dockgate.policy.summary import SectionAccess, section_access

OK = "ok"
WARNING = "warning"
ERROR = "error"

API = "api"  # a --listen listener: the Engine API, behind the policy
ADMIN = "admin"  # the --admin-listen listener: health and metrics only

WRAP_COLUMNS = 100  # text lines stay short enough to paste into an issue's fenced block
# Where the client settings below keep their files: a directory of their own, because a
# config.json's HttpHeaders go to every daemon that configuration talks to.
CLIENT_DIR = "$HOME/.docker/dockgate"


# ----- the facts the probe gathers --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Header:
    version: str
    python: str
    platform: str
    container: str | None  # how a container was recognised (`/.dockerenv`), None: not in one
    uid: str  # `1000 (alice)`
    gid: str
    groups: tuple[str, ...]
    hostname: str


@dataclass(frozen=True, slots=True)
class Check:
    """One check, with the text `dockgate serve` prints for it (which names the fix)."""

    name: str
    status: str  # OK, WARNING or ERROR
    message: str


@dataclass(frozen=True, slots=True)
class SocketFile:
    """A unix listener's file: as it is (a gateway runs), or as `serve` would make it."""

    mode: int  # permission bits
    owner: str
    group: str
    exists: bool


@dataclass(frozen=True, slots=True)
class Credentials:
    """What authenticates callers, counted. `users`/`tokens` are None when the file did not
    load (its check says why)."""

    htpasswd: str | None = None
    users: int | None = None
    tokens_file: str | None = None
    tokens: int | None = None
    tls_cert: str | None = None  # TCP listeners speak TLS
    client_ca: str | None = None  # ... and require client certificates signed by it

    @property
    def required(self) -> bool:
        """Credentials (Basic or a token) on every API listener (policy/admission.py)."""
        return self.htpasswd is not None or self.tokens_file is not None


@dataclass(frozen=True, slots=True)
class ListenerFacts:
    address: Address
    role: str  # API or ADMIN
    loopback: bool  # Address.is_loopback(): a unix socket, or every address it names is loopback
    socket_file: SocketFile | None = None  # unix listeners


@dataclass(frozen=True, slots=True)
class Daemon:
    upstream: str
    link: str  # "plain" or how TLS protects it (upstreamtls.describe)
    answers: bool | None  # to `_ping`; None when not asked (the configuration did not parse)
    version: str | None = None
    api_version: str | None = None
    platform: str | None = None  # `linux/amd64`


# ----- the report -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientSettings:
    docker_host: str
    environment: tuple[str, ...]  # `DOCKER_HOST=...` lines, for `export`
    context: str  # a `docker context create` command
    config_json: str | None = None  # the ~/.docker/config.json HttpHeaders, with a placeholder
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Listener:
    role: str
    address: str
    transport: str  # "unix socket", "TCP", "TCP with TLS"
    reach: str  # who can connect, in words
    authentication: str
    client: ClientSettings | None  # API listeners only


@dataclass(frozen=True, slots=True)
class PolicyRow:
    name: str
    who: tuple[str, ...]  # who gets it: every caller, or its bindings
    read_only: bool
    guardrails: bool
    ownership: bool
    sections: tuple[SectionAccess, ...]
    basis: str = ""  # what the policy file built it on: "preset traefik" (Policy.basis)
    mode: str = "enforce"  # rollout mode (policy/modes.py); a binding's own is in `who`
    defaults: str = ""  # what creates are given (body/defaults.py), in words; "": nothing


@dataclass(frozen=True, slots=True)
class PolicyFacts:
    source: str  # the file, or "environment"
    rows: tuple[PolicyRow, ...]
    hosts: tuple[str, ...]  # Host names accepted beyond addresses and localhost
    origins: tuple[str, ...]
    sources: str | None  # the global --allow-source/--deny-source lists, in words


@dataclass(frozen=True, slots=True)
class Report:
    header: Header
    checks: tuple[Check, ...]
    daemon: Daemon | None
    listeners: tuple[Listener, ...]
    # Facts about exposure: what `serve` says about a listener that anyone may reach
    # (--insecure), and whether this runs in a container. The container-network rule of the
    # Tecnativa drop-in (startup/containerself.py, issue 13) adds its facts here.
    exposure: tuple[str, ...]
    policy: PolicyFacts | None
    notes: tuple[str, ...] = field(default=())

    @property
    def status(self) -> str:
        statuses = {check.status for check in self.checks}
        return ERROR if ERROR in statuses else WARNING if WARNING in statuses else OK

    @property
    def exit_code(self) -> int:
        """1 when a check is an error (`serve` would not start, or not work), else 0."""
        return 1 if self.status == ERROR else 0


# ----- building it from the facts ---------------------------------------------------------------


def _is_wildcard(address: Address) -> bool:
    return address.scheme == "tcp" and address.host in ("0.0.0.0", "::", "")


def reach(facts: ListenerFacts, sources: SourceRules, *, in_container: bool) -> str:
    """Who can connect to the listener, in words (not yet who is let in: see authentication)."""
    address = facts.address
    if address.scheme == "unix":
        words = _socket_reach(address.path, facts.socket_file)
        listed = sources.allow.unix or sources.deny.unix
    else:
        listed = bool(sources)
        if facts.loopback:
            words = f"{address}: loopback: local processes only" + (
                " (of this container's network namespace)" if in_container else ""
            )
        elif _is_wildcard(address):
            words = f"{address}: all interfaces: any host that can route here"
        else:
            words = f"{address}: any host that can route to {address.host}"
    if listed and facts.role == API:
        if sources.allow:
            words += f"; only from {sources.allow} (--allow-source)"
        if sources.deny:
            words += f"; never from {sources.deny} (--deny-source)"
    return words


def _socket_reach(path: str, socket_file: SocketFile | None) -> str:
    """connect(2) on a unix socket needs write permission on its file (unix(7))."""
    if socket_file is None:
        return f"unix socket {path}"
    mode, owner, group = socket_file.mode, socket_file.owner, socket_file.group
    who = ["root"]
    if mode & stat.S_IWOTH:
        who = ["every local user"]
    else:
        if mode & stat.S_IWUSR and owner != "root":
            who.append(f"user {owner}")
        if mode & stat.S_IWGRP:
            who.append(f"members of group {group}")
    made = "" if socket_file.exists else " (as serve will create it)"
    return f"unix socket {path} mode {mode:04o} owner {owner} group {group}{made}: {', '.join(who)}"


def authentication(
    facts: ListenerFacts, credentials: Credentials, policies: PolicySet | None
) -> str:
    """What a caller must show on this listener (policy/admission.py's order, in words)."""
    if facts.role == ADMIN:
        return "none: /healthz, /readyz and /metrics only, never the Engine API"
    tls = facts.address.scheme == "tcp" and credentials.tls_cert is not None
    parts = []
    if tls and credentials.client_ca is not None:
        parts.append(
            f"a client certificate signed by --tls-client-ca {credentials.client_ca} "
            "(required by the TLS handshake)"
        )
    methods = []
    if credentials.htpasswd is not None:
        methods.append(f"Basic ({_count(credentials.users, 'user')} in {credentials.htpasswd})")
    if credentials.tokens_file is not None:
        methods.append(
            f"a bearer token ({_count(credentials.tokens, 'token')} in {credentials.tokens_file})"
        )
    if methods:
        parts.append("credentials: " + " or ".join(methods))
    bindings = policies.bindings if policies is not None else None
    anonymous = [b for b in bindings or () if b.anonymous]
    if not parts and bindings is not None:
        # Callers without credentials match only anonymous bindings (rules.Binding).
        if not anonymous:
            return (
                "none, and no binding takes callers without credentials: every request "
                "is refused (403 no policy is bound)"
            )
        return "none: callers get policy " + ", ".join(sorted({b.policy for b in anonymous}))
    if not parts:
        if facts.loopback:
            return "none: every caller that reaches it gets the policy"
        return "NONE: anyone who reaches it controls the Docker daemon (root on its host)"
    if anonymous and credentials.required:
        parts.append(
            "callers without credentials get policy "
            + ", ".join(sorted({b.policy for b in anonymous}))
            + " (an anonymous binding)"
        )
    return "required: " + "; ".join(parts)


def _count(number: int | None, noun: str) -> str:
    if number is None:
        return f"{noun}s unknown (the file did not load)"
    return f"{number} {noun}{'' if number == 1 else 's'}"


def client_settings(address: Address, credentials: Credentials, *, hostname: str) -> ClientSettings:
    """What a docker CLI (or an SDK) sets to use this listener."""
    if address.scheme == "unix":
        docker_host = f"unix://{address.path}"
    else:
        # A wildcard listener has no address of its own for clients: this host's name stands
        # in (any name or address of it that the clients can reach).
        host = hostname if _is_wildcard(address) else address.host
        docker_host = f"tcp://{f'[{host}]' if ':' in host else host}:{address.port}"
    environment = [f"DOCKER_HOST={docker_host}"]
    context = [f"host={docker_host}"]
    notes: list[str] = []
    if address.scheme == "tcp" and credentials.tls_cert is not None:
        environment += ["DOCKER_TLS_VERIFY=1", f"DOCKER_CERT_PATH={CLIENT_DIR}"]
        context.append(f"ca={CLIENT_DIR}/ca.pem")
        notes.append(f"ca.pem: the CA that signed --tls-cert {credentials.tls_cert}")
        if credentials.client_ca is not None:
            context += [f"cert={CLIENT_DIR}/cert.pem", f"key={CLIENT_DIR}/key.pem"]
            notes.append(
                "cert.pem, key.pem: a client certificate (and its key) signed by "
                f"--tls-client-ca {credentials.client_ca}"
            )
    config_json = None
    header = None
    if credentials.tokens_file is not None:
        header = "Bearer TOKEN"
        notes.append(
            "TOKEN: what `dockgate token create` printed (the tokens file keeps only a hash)"
        )
    if credentials.htpasswd is not None:
        basic = "BASE64: printf '%s' 'USER:PASSWORD' | base64"
        if header is None:
            header = "Basic BASE64"
        else:
            basic = f'or, for a user of the htpasswd file, "Basic BASE64" with {basic}'
        notes.append(basic)
    if header is not None:
        config_json = f'{{ "HttpHeaders": {{ "Authorization": "{header}" }} }}'
        environment.append(f"DOCKER_CONFIG={CLIENT_DIR}")
        notes.append(
            f"config.json in DOCKER_CONFIG ({CLIENT_DIR}/config.json): its HttpHeaders go to "
            "every daemon that configuration talks to, hence a directory of its own; a docker "
            "context does not carry headers"
        )
        if credentials.htpasswd is not None:
            notes.append(
                "DOCKER_HOST cannot carry a password: the docker CLI drops USER:PASSWORD@ from "
                "tcp:// (moby opts/hosts.go ParseTCPAddr keeps host and port); the Python SDK "
                'takes client.api.headers["Authorization"] = "Basic BASE64", dockerode '
                "new Docker({host, port, headers: {Authorization: 'Basic BASE64'}}), "
                "curl -u USER:PASSWORD"
            )
    command = f'docker context create dockgate --docker "{",".join(context)}"'
    return ClientSettings(docker_host, tuple(environment), command, config_json, tuple(notes))


def listener(
    facts: ListenerFacts,
    credentials: Credentials,
    policies: PolicySet | None,
    *,
    hostname: str,
    in_container: bool,
) -> Listener:
    address = facts.address
    tls = address.scheme == "tcp" and credentials.tls_cert is not None and facts.role == API
    transport = "unix socket" if address.scheme == "unix" else "TCP with TLS" if tls else "TCP"
    sources = policies.sources if policies is not None else SourceRules()
    return Listener(
        facts.role,
        str(address),
        transport,
        reach(facts, sources, in_container=in_container),
        authentication(facts, credentials, policies),
        client_settings(address, credentials, hostname=hostname) if facts.role == API else None,
    )


def describe_binding(binding: Binding) -> str:
    """`binding 2 (line 14): users bob; tokens ci; from 10.0.0.0/8`: names only, from the
    policy file (never a credential)."""
    parts = []
    for label, names in (
        ("users", binding.users),
        ("tokens", binding.tokens),
        ("certificates", binding.certificates),
        ("groups", binding.groups),
    ):
        if names:
            parts.append(f"{label} {', '.join(sorted(names))}")
    if binding.authenticated:
        parts.append("every authenticated caller")
    if binding.anonymous:
        parts.append("callers without credentials")
    # By the unix-socket peer (docs/policy.md, "The calling container as the identity")
    if binding.container is not None:
        parts.append(f"containers with {binding.container.shown}")
    if binding.services:
        parts.append(f"tasks of services {', '.join(sorted(binding.services))}")
    for label, ids in (("uids", binding.uids), ("gids", binding.gids)):
        if ids:
            parts.append(f"host processes of {label} {', '.join(map(str, sorted(ids)))}")
    if binding.sources is not None:
        if binding.sources.allow:
            parts.append(f"from {binding.sources.allow}")
        if binding.sources.deny:
            parts.append(f"not from {binding.sources.deny}")
    where = f" (line {binding.line})" if binding.line else ""
    return f"binding {binding.number}{where}: {'; '.join(parts) or 'nobody'}"


def _own_mode(policies: PolicySet, number: int) -> str:
    """`; mode warn` for a binding whose mode is not its policy's (policy/modes.py)."""
    bound = policies.bound.get(number)
    return "" if bound is None else f"; mode {bound.mode}"


def policy_facts(policies: PolicySet, *, authenticated: bool) -> PolicyFacts:
    """One row per policy in force (the default one, or every bound one), as `summaries`."""
    rows = []
    if policies.bindings is None:
        in_force = [policies.policies[policies.default]]
    else:
        in_force = list(policies.policies.values())
    for policy in in_force:
        if policies.bindings is None:
            who: tuple[str, ...] = (
                "every caller that authenticates" if authenticated else "every caller",
            )
        else:
            who = tuple(
                describe_binding(b) + _own_mode(policies, b.number)
                for b in policies.bindings
                if b.policy == policy.name
            )
            who = who or ("nobody: no binding names it",)
        rows.append(
            PolicyRow(
                policy.name,
                who,
                policy.read_only,
                policy.guardrails is not None,
                policy.ownership,
                tuple(section_access(policy)),
                policy.basis,
                policy.mode,
                describe(policy.defaults.summary()) if policy.defaults is not None else "",
            )
        )
    sources = []
    if policies.sources.allow:
        sources.append(f"only from {policies.sources.allow}")
    if policies.sources.deny:
        sources.append(f"never from {policies.sources.deny}")
    return PolicyFacts(
        policies.source,
        tuple(rows),
        tuple(sorted(policies.hosts)),
        tuple(sorted(policies.origins)),
        "; ".join(sources) or None,
    )


# ----- rendering --------------------------------------------------------------------------------


def to_json(report: Report) -> str:
    data = dataclasses.asdict(report)
    data["status"] = report.status
    data["exit_code"] = report.exit_code
    for row in data["policy"]["rows"] if data["policy"] else ():
        # Sections by name: {"containers": {"read": "all", "write": "some"}}.
        row["sections"] = {
            s["section"]: {"read": s["read"], "write": s["write"]} for s in row["sections"]
        }
    return json.dumps(data, indent=2)


def _wrapped(text: str, indent: str, first: str = "", then: str = "    ") -> list[str]:
    """`text` in lines of at most WRAP_COLUMNS (a word longer than that stays whole), the
    first starting with `first`, the others with `then`."""
    return textwrap.wrap(
        text,
        WRAP_COLUMNS,
        initial_indent=indent + first,
        subsequent_indent=indent + then,
        break_long_words=False,
        break_on_hyphens=False,
    ) or [indent + first]


def _title(text: str) -> list[str]:
    return ["", text, "-" * len(text)]


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def to_text(report: Report) -> str:
    """Plain ASCII, short lines: pastes into an issue between ``` lines."""
    h = report.header
    lines = [
        "dockgate doctor",
        f"dockgate {h.version}; Python {h.python}; {h.platform}",
        f"container: {('yes (' + h.container + ')') if h.container else 'no'}; host {h.hostname}",
        f"uid {h.uid}, gid {h.gid}, groups {', '.join(h.groups) or '-'}",
    ]
    lines += _title("Checks")
    for check in report.checks:
        lines += _wrapped(check.message, "", f"[{check.status}] {check.name}: ")
    errors = sum(c.status == ERROR for c in report.checks)
    warnings = sum(c.status == WARNING for c in report.checks)
    lines.append(f"=> {_count(errors, 'error')}, {_count(warnings, 'warning')}")
    if report.daemon is not None:
        d = report.daemon
        lines += _title("Daemon")
        lines.append(f"upstream: {d.upstream} ({d.link})")
        answer = "not asked" if d.answers is None else "answers" if d.answers else "no answer"
        lines.append(f"_ping:    {answer}")
        if d.version is not None:
            lines.append(f"version:  Docker {d.version}, API {d.api_version}, {d.platform}")
    if report.listeners:
        lines += _title("Listeners")
        for item in report.listeners:
            role = "API" if item.role == API else "admin"
            lines.append(f"{item.address} ({role}, {item.transport})")
            lines += _wrapped(item.reach, "  ", "reach: ")
            lines += _wrapped(item.authentication, "  ", "authentication: ")
    lines += _title("Exposure")
    lines += [line for fact in report.exposure for line in _wrapped(fact, "", "- ")] or ["- none"]
    if report.policy is not None:
        lines += _policy_text(report.policy)
    clients = [item for item in report.listeners if item.client is not None]
    if clients:
        lines += _title("Client settings")
        for item in clients:
            assert item.client is not None
            lines.append(f"{item.address}:")
            lines += [f"  export {line}" for line in item.client.environment]
            lines.append(f"  {item.client.context}")  # a command: whole, to copy
            if item.client.config_json is not None:
                lines.append(f"  config.json: {item.client.config_json}")
            for note in item.client.notes:
                lines += _wrapped(note, "  ", "# ", "#   ")
    for note in report.notes:
        lines += _wrapped(note, "", "note: ")
    return "\n".join(lines) + "\n"


def _policy_text(policy: PolicyFacts) -> list[str]:
    """Sections down, policies across (two dozen sections do not fit across a pasted line);
    each cell is `read/write`: all, some, none, or - where the section has no such operation."""
    lines = _title(f"Policy (from {policy.source})")
    names = [row.name for row in policy.rows]
    table: list[list[str]] = [["section (read/write)", *names]]
    for i, access in enumerate(policy.rows[0].sections if policy.rows else ()):
        table.append(
            [access.section, *(f"{r.sections[i].read}/{r.sections[i].write}" for r in policy.rows)]
        )
    for label, attribute in (
        ("read_only", "read_only"),
        ("guardrails", "guardrails"),
        ("ownership", "ownership"),
    ):
        table.append([label, *(_yes(getattr(r, attribute)) for r in policy.rows)])
    table.append(["mode", *(r.mode for r in policy.rows)])
    lines += _table(table)
    lines.append("")
    for row in policy.rows:
        lines.append(f"{row.name}:" + (f" ({row.basis})" if row.basis else ""))
        lines += [line for who in row.who for line in _wrapped(who, "  ", "- ")]
        if row.defaults:
            lines += _wrapped(row.defaults, "  ", "defaults put into creates: ")
    for label, values in (("Host names", policy.hosts), ("origins", policy.origins)):
        if values:
            lines += _wrapped(", ".join(values), "", f"{label} accepted: ")
    if policy.sources is not None:
        lines += _wrapped(policy.sources, "", "source addresses: ")
    return lines


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def checks_from(name: str, warnings: Iterable[str], ok: str) -> list[Check]:
    """A warning check per line, or one ok check saying what was found fine."""
    found = [Check(name, WARNING, text) for text in warnings]
    return found or [Check(name, OK, ok)]
