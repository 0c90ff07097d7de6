"""The probing half of `dockgate doctor`: runs the checks `dockgate serve` runs at start (the
same functions: startup/checks.py, server.py's exposure and credential loading), looks at the
sockets and the daemon, and hands the facts to startup/doctor.py, which builds the report.

Nothing is bound, created or changed: the gateway may be running with the same configuration
(its ports taken, its socket in place), and the report then describes it as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import platform
import socket
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from dockgate import __version__
from dockgate.addresses import Address
from dockgate.auth.filemode import credential_file_warnings
from dockgate.config import ServeConfig
from dockgate.ownership.lookup import LookupError_, get_json
from dockgate.policy.rules import PolicySet
from dockgate.server import (
    StartupError,
    check_exposure,
    load_authenticator,
    load_tls,
    unknown_binding_names,
)
from dockgate.startup.accounts import group_name, user_name
from dockgate.startup.checks import (
    StartupCheckError,
    check_certificate_files,
    check_upstream_socket,
    configured_own_listener,
    own_listener_message,
    ping_upstream,
)
from dockgate.startup.containerself import CannotTell, find_self
from dockgate.startup.doctor import (
    ADMIN,
    API,
    ERROR,
    OK,
    WARNING,
    Check,
    Credentials,
    Daemon,
    Header,
    ListenerFacts,
    PolicyFacts,
    Report,
    SocketFile,
    checks_from,
    listener,
    policy_facts,
)

# Files and variables that container runtimes leave: Docker's /.dockerenv, Podman's
# /run/.containerenv, systemd-nspawn's and Podman's `container` variable.
CONTAINER_FILES = ("/.dockerenv", "/run/.containerenv")
# Lower case by convention (systemd's Container Interface), hence a constant ruff cannot judge.
CONTAINER_VARIABLE = "container"
CGROUP_WORDS = ("docker", "kubepods", "containerd", "libpod", "lxc")


@dataclass
class Setup:
    """What the command line and the environment gave, parsed by `serve`'s own code (cli.py);
    an error instead of a value where that code refused it, with the text `serve` prints."""

    config: ServeConfig | None
    config_error: str | None
    upstream_link: str  # "plain", or upstreamtls.describe
    policies: PolicySet | None
    policy_error: str | None
    policy_warnings: list[str] = field(default_factory=list)
    environment_warnings: list[str] = field(default_factory=list)


def diagnose(setup: Setup) -> Report:
    header = probe_header()
    checks = [
        Check("configuration", ERROR, setup.config_error)
        if setup.config_error is not None
        else Check("configuration", OK, "the options and DOCKGATE_* variables are valid")
    ]
    checks += checks_from(
        "environment",
        setup.environment_warnings,
        "no unknown DOCKGATE_* variable, no Tecnativa look-alike",
    )
    if setup.policy_error is not None:
        checks.append(Check("policy", ERROR, setup.policy_error))
    elif setup.policies is not None:
        checks += checks_from(
            "policy", setup.policy_warnings, f"policies from {setup.policies.source} load"
        )
        audited = setup.config is not None and setup.config.audit_log != "off"
        checks += checks_from(
            "modes",
            setup.policies.mode_warnings(audited=audited),
            "every policy and binding is in enforce mode",
        )
    config = setup.config
    if config is None:
        return Report(
            header,
            tuple(checks),
            None,
            (),
            (),
            _policy(setup.policies, authenticated=False),
            ("the configuration does not parse: nothing else was checked",),
        )
    credentials, credential_checks = _credentials(config, setup.policies)
    checks += _exposure_checks(config, setup.policies)
    checks += _own_listener_checks(config)
    if config.upstream.scheme == "unix":
        checks += _guarded(
            "upstream socket",
            lambda: check_upstream_socket(config.upstream),
            f"{config.upstream.path} is a socket this user may write to",
        )
    else:
        checks.append(Check("upstream socket", OK, f"{config.upstream} is TCP: no socket"))
    checks += _certificate_checks(config)
    checks += credential_checks
    daemon, answer = probe_daemon(config.upstream, setup.upstream_link)
    checks.append(answer)
    in_container = header.container is not None
    listeners = [
        listener(
            facts,
            credentials,
            setup.policies,
            hostname=header.hostname,
            in_container=in_container,
        )
        for facts in listener_facts(config)
    ]
    return Report(
        header,
        tuple(checks),
        daemon,
        tuple(listeners),
        tuple(_exposure_facts(config, credentials, header.container)),
        _policy(setup.policies, authenticated=credentials.required),
        (),
    )


def _policy(policies: PolicySet | None, *, authenticated: bool) -> PolicyFacts | None:
    return policy_facts(policies, authenticated=authenticated) if policies is not None else None


def _guarded(name: str, check: Callable[[], list[str]], ok: str) -> list[Check]:
    """A startup/checks.py check: its warnings, or its error (StartupCheckError), as Checks."""
    try:
        warnings = check()
    except (StartupCheckError, StartupError) as exc:
        return [Check(name, ERROR, str(exc))]
    return checks_from(name, warnings, ok)


def _exposure_checks(config: ServeConfig, policies: PolicySet | None) -> list[Check]:
    """server.check_exposure as `serve` runs it: its refusal is an error; the warning it prints
    (--insecure, the container drop-in) is captured, so the report says what `serve` says,
    whatever rule it applies."""
    if policies is None:
        return [Check("exposure", WARNING, "not checked: the policy does not load")]
    printed = io.StringIO()
    try:
        with contextlib.redirect_stderr(printed):
            check_exposure(config, policies)
    except StartupError as exc:
        return [Check("exposure", ERROR, str(exc))]
    lines = [line.removeprefix("dockgate: ") for line in printed.getvalue().splitlines()]
    warnings = [line.removeprefix("warning: ") for line in lines if line]
    return checks_from("exposure", warnings, "every listener is local or asks for authentication")


def _own_listener_checks(config: ServeConfig) -> list[Check]:
    listeners = [*config.listen, *([config.admin_listen] if config.admin_listen else [])]
    own = configured_own_listener(config.upstream, listeners)
    if own is not None:
        return [Check("own listener", ERROR, own_listener_message(config.upstream, own))]
    upstream = config.upstream
    return [Check("own listener", OK, f"the upstream {upstream} is none of the listeners")]


def _certificate_checks(config: ServeConfig) -> list[Check]:
    if config.tls_cert is None:
        return [Check("certificates", OK, "no TLS on the listeners: no certificate to check")]
    loaded = "--tls-cert, --tls-key" + (" and --tls-client-ca" if config.tls_client_ca else "")
    checks = _guarded("certificates", lambda: check_certificate_files(config), loaded + " load")
    if any(check.status == ERROR for check in checks):
        return checks
    try:
        load_tls(config)  # as `serve` loads them: the chain, the key, the client CA together
    except StartupError as exc:
        return [Check("certificates", ERROR, str(exc))]
    return checks


def _credentials(
    config: ServeConfig, policies: PolicySet | None
) -> tuple[Credentials, list[Check]]:
    """The credential files loaded as `serve` loads them, counted; their warnings (weak hash
    schemes, bindings naming users no file has) as checks."""
    base = Credentials(
        htpasswd=config.htpasswd,
        tokens_file=config.tokens,
        tls_cert=config.tls_cert,
        client_ca=config.tls_client_ca,
    )
    if config.htpasswd is None and config.tokens is None:
        return base, [Check("credentials", OK, "no --htpasswd or --tokens file")]
    try:
        authenticator = load_authenticator(config)
    except StartupError as exc:
        return base, [Check("credentials", ERROR, str(exc))]
    htpasswd, tokens = authenticator.htpasswd, authenticator.tokens
    counted = Credentials(
        htpasswd=config.htpasswd,
        users=len(htpasswd.credentials) if htpasswd is not None else None,
        tokens_file=config.tokens,
        tokens=len(tokens.by_digest) if tokens is not None else None,
        tls_cert=config.tls_cert,
        client_ca=config.tls_client_ca,
    )
    warnings = list(htpasswd.warnings) if htpasswd is not None else []
    warnings += credential_file_warnings(config.htpasswd, config.tokens)  # as serve says it
    if policies is not None:
        warnings += unknown_binding_names(policies, authenticator)
    return counted, checks_from("credentials", warnings, "the credential files load")


def probe_daemon(upstream: Address, link: str) -> tuple[Daemon, Check]:
    """`_ping` as `serve` sends it at start, then `/version` when it answered.

    A daemon that does not answer is an error here, where `serve` only warns (it may start
    later, and `serve` then works): doctor says whether requests work now, and they get 502."""
    if upstream.scheme == "unix" and not os.path.exists(upstream.path):
        # ping_upstream leaves it to the socket check, which says what to do.
        why = f"the Docker daemon at {upstream} does not answer: its socket does not exist"
        return Daemon(str(upstream), link, False), Check("daemon", ERROR, why + _MEANWHILE)
    warnings = ping_upstream(upstream)
    if warnings:
        return Daemon(str(upstream), link, False), Check("daemon", ERROR, " ".join(warnings))
    answered = f"{upstream} answers GET /_ping"
    try:
        status, answer = asyncio.run(get_json(upstream, "/version"))
    except LookupError_ as exc:
        return Daemon(str(upstream), link, True), Check("daemon", OK, f"{answered} ({exc})")
    if status != 200 or not isinstance(answer, dict):
        what = f"{answered} (GET /version answered {status})"
        return Daemon(str(upstream), link, True), Check("daemon", OK, what)
    daemon = Daemon(
        str(upstream),
        link,
        True,
        str(answer.get("Version", "?")),
        str(answer.get("ApiVersion", "?")),
        f"{answer.get('Os', '?')}/{answer.get('Arch', '?')}",
    )
    what = f"{answered}: Docker {daemon.version}, API {daemon.api_version}"
    return daemon, Check("daemon", OK, what)


_MEANWHILE = "; `dockgate serve` starts anyway, and requests get 502 until it does"


def listener_facts(config: ServeConfig) -> list[ListenerFacts]:
    facts = [_facts(address, API, config) for address in config.listen]
    if config.admin_listen is not None:
        facts.append(_facts(config.admin_listen, ADMIN, config))
    return facts


def _facts(address: Address, role: str, config: ServeConfig) -> ListenerFacts:
    if address.scheme != "unix":
        return ListenerFacts(address, role, address.is_loopback())
    return ListenerFacts(address, role, True, _socket_file(address.path, config))


def _socket_file(path: str, config: ServeConfig) -> SocketFile:
    """The socket as it is when a gateway runs; else as `serve` makes it (server._bind_unix:
    --socket-mode, --socket-group, else this process's user and group)."""
    try:
        info = os.stat(path)
    except OSError:
        info = None
    if info is not None and stat.S_ISSOCK(info.st_mode):
        return SocketFile(
            stat.S_IMODE(info.st_mode), user_name(info.st_uid), group_name(info.st_gid), exists=True
        )
    group = config.socket_group
    if group is None:
        group = group_name(os.getegid())
    elif group.isdigit():
        group = group_name(int(group))
    return SocketFile(config.socket_mode, user_name(os.geteuid()), group, exists=False)


def _exposure_facts(
    config: ServeConfig, credentials: Credentials, container: str | None
) -> list[str]:
    facts = [f"running in a container ({container})" if container else "not running in a container"]
    if container:
        facts += _container_facts(config.upstream)
    for address in config.listen:
        if address.scheme != "tcp" or address.is_loopback():
            continue
        facts.append(f"{address} can be reached from other hosts (firewall rules aside)")
        if config.tls_cert is None and credentials.required:
            facts.append(
                f"{address} is plain TCP: Basic credentials and tokens cross the network in "
                "clear text; give it TLS (--tls-cert, --tls-key)"
            )
    return facts


def _container_facts(upstream: Address) -> list[str]:
    """What the daemon says of this container (startup/containerself.py, the drop-in rule's
    facts)."""
    try:
        found = asyncio.run(find_self(upstream))
    except CannotTell as exc:
        return [f"the daemon's view of this container: unknown ({exc})"]
    names = ", ".join(sorted(found.names)) or "none"
    reach = (
        "; ".join(found.problems)
        or "only from its networks (no port published beyond the host's loopback)"
    )
    return [
        f"the daemon says: {found.describe()}",
        f"names other containers reach it by (accepted as Host): {names}",
        f"reachable: {reach}",
    ]


def probe_header() -> Header:
    groups = sorted(set(os.getgroups()) | {os.getegid()})
    return Header(
        __version__,
        platform.python_version(),
        platform.platform(),
        container_marker(),
        f"{os.geteuid()} ({user_name(os.geteuid())})",
        f"{os.getegid()} ({group_name(os.getegid())})",
        tuple(f"{gid} ({group_name(gid)})" for gid in groups),
        socket.gethostname(),
    )


def container_marker() -> str | None:
    """What says this process runs in a container, or None."""
    for path in CONTAINER_FILES:
        if os.path.exists(path):
            return path
    runtime = os.environ.get(CONTAINER_VARIABLE)
    if runtime:
        return f"{CONTAINER_VARIABLE}={runtime}"
    try:
        with open("/proc/1/cgroup", encoding="utf-8", errors="replace") as handle:
            cgroup = handle.read()
    except OSError:
        return None
    for word in CGROUP_WORDS:
        if word in cgroup:
            return f"/proc/1/cgroup names {word}"
    return None
