"""Command-line interface: parses options, reports bad ones in one line, and runs the gateway.

Only this module exits the process.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from dockgate import __version__
from dockgate.addresses import Address, AddressError, parse_address, shown_address
from dockgate.auth import credtools
from dockgate.auth.identity import (
    ANONYMOUS_IDENTITY,
    BASIC,
    CERTIFICATE,
    CONTAINER,
    PROCESS,
    TOKEN,
    ContainerFacts,
    Identity,
)
from dockgate.auth.sourceaddr import UNIX_SOURCE, AddressListError, SourceRules, parse_address_list
from dockgate.check import CheckRequest, run_check
from dockgate.config import DEFAULT_LISTEN, DEFAULT_UPSTREAM, ServeConfig
from dockgate.policy.learn import Learner, LearnError, ReadResult, read_records
from dockgate.policy.learndiff import diff as learn_diff
from dockgate.policy.loader import PolicyError, load_policy_file
from dockgate.policy.presetlist import list_presets, show_preset
from dockgate.policy.rules import PolicySet
from dockgate.policy.sources import load_policies
from dockgate.policy.tecnativa import EnvironmentError_
from dockgate.relay.tls import DEFAULT_IDENTITY_FIELDS
from dockgate.relay.upstreamtls import UpstreamTLSFiles, resolve_upstream
from dockgate.relay.upstreamtls import describe as describe_upstream_tls
from dockgate.server import StartupError, run
from dockgate.startup.doctor import to_json as doctor_json
from dockgate.startup.doctor import to_text as doctor_text
from dockgate.startup.doctorprobe import Setup, diagnose
from dockgate.startup.envwarnings import environment_warnings
from dockgate.watched import WatchedFile


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dockgate",
        description="A safe, fast gateway for the Docker Engine API over the network.",
    )
    parser.add_argument("--version", action="version", version=f"dockgate {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument(
        "--listen",
        action="append",
        metavar="ADDR",
        help=f"tcp://HOST:PORT or unix:///path (repeatable; default {DEFAULT_LISTEN})",
    )
    serve.add_argument(
        "--upstream",
        metavar="ADDR",
        help=f"the Docker daemon (default: $DOCKER_HOST, else {DEFAULT_UPSTREAM})",
    )
    serve.add_argument(
        "--upstream-tls-ca",
        default=None,
        metavar="FILE",
        help="a tcp:// upstream speaks TLS; its certificate must be signed by this CA (PEM) "
        "and name its host (default from $DOCKER_TLS_VERIFY/$DOCKER_CERT_PATH with $DOCKER_HOST)",
    )
    serve.add_argument(
        "--upstream-tls-cert",
        default=None,
        metavar="FILE",
        help="client certificate (PEM) presented to a TLS upstream (with --upstream-tls-key)",
    )
    serve.add_argument(
        "--upstream-tls-key", default=None, metavar="FILE", help="its private key (PEM)"
    )
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback TCP listener without authentication (root for anyone)",
    )
    serve.add_argument("--log-format", choices=["text", "json"], default="text")
    serve.add_argument(
        "--access-log",
        default="-",
        metavar="PATH",
        help="'-' for stdout (default), 'off', or a file",
    )
    serve.add_argument("--workers", type=int, default=1, metavar="N")
    serve.add_argument("--header-timeout", type=float, default=10.0, metavar="SECONDS")
    serve.add_argument("--idle-timeout", type=float, default=120.0, metavar="SECONDS")
    serve.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="a body held to be checked must arrive whole within this time, else 408 "
        "(default %(default)s)",
    )
    serve.add_argument(
        "--held-bodies-max",
        default="64MiB",
        metavar="SIZE",
        help="all bodies and answers held whole at once, per process, beyond which 503 "
        "(bytes, or with KiB/MiB/GiB; default %(default)s)",
    )
    serve.add_argument(
        "--no-shared-events",
        action="store_true",
        help="give each GET /events stream a daemon connection of its own (default: clients "
        "asking for the same events share one)",
    )
    serve.add_argument("--shutdown-timeout", type=float, default=10.0, metavar="SECONDS")
    serve.add_argument("--socket-mode", default="660", metavar="OCTAL")
    serve.add_argument("--socket-group", default=None, metavar="NAME|GID")
    serve.add_argument("--upstream-pool-size", type=int, default=64, metavar="N")
    serve.add_argument("--max-header-bytes", type=int, default=64 * 1024, metavar="N")
    serve.add_argument(
        "--tls-cert",
        default=None,
        metavar="FILE",
        help="PEM certificate chain: TCP listeners speak TLS",
    )
    serve.add_argument("--tls-key", default=None, metavar="FILE", help="PEM private key")
    serve.add_argument(
        "--tls-client-ca",
        default=None,
        metavar="FILE",
        help="require client certificates signed by this CA (PEM)",
    )
    serve.add_argument(
        "--htpasswd",
        default=None,
        metavar="FILE",
        help="require Basic credentials from this htpasswd file (htpasswd -B)",
    )
    serve.add_argument(
        "--tokens",
        default=None,
        metavar="FILE",
        help="accept bearer tokens from this file ('dockgate token create')",
    )
    serve.add_argument(
        "--tls-identity",
        default=",".join(DEFAULT_IDENTITY_FIELDS),
        metavar="FIELDS",
        help="client certificate fields that name the caller, in order (cn,dns,email,uri; "
        "default %(default)s)",
    )
    serve.add_argument(
        "--trusted-proxy",
        action="append",
        default=[],
        metavar="CIDR",
        help="a load balancer whose X-Forwarded-For (or PROXY header) is believed; repeatable",
    )
    serve.add_argument(
        "--proxy-protocol",
        action="store_true",
        help="connections from --trusted-proxy addresses start with a PROXY protocol header",
    )
    serve.add_argument(
        "--auth-failures",
        type=int,
        default=20,
        metavar="N",
        help="failed logins per source address per window before 429 (0: no limit)",
    )
    serve.add_argument(
        "--auth-failures-per-user",
        type=int,
        default=50,
        metavar="N",
        help="failed logins per user name per window before 429 (0: no limit)",
    )
    serve.add_argument("--auth-failure-window", type=float, default=60.0, metavar="SECONDS")
    serve.add_argument(
        "--admin-listen",
        default=None,
        metavar="ADDR",
        help="health endpoints /healthz and /readyz on their own listener, e.g. "
        "tcp://127.0.0.1:9375 (default: none)",
    )
    serve.add_argument(
        "--audit-log",
        default="off",
        metavar="PATH",
        help="structured audit trail (JSON lines): 'off' (default), '-' for stdout, or a file",
    )
    _policy_options(serve)
    serve.epilog = (
        "Every option can also be given as an environment variable: DOCKGATE_ and the option's "
        "name in upper case with '_' for '-' (DOCKGATE_LISTEN, DOCKGATE_HTPASSWD, ...); "
        "repeatable options take a comma-separated list; switches take 1/true/yes. Options on "
        "the command line win."
    )
    _defaults_from_environment(serve, dict(os.environ))

    # `serve`'s own options (the same action objects, with the defaults their variables gave),
    # so that every option and DOCKGATE_ variable means to `doctor` what it means to `serve`.
    doctor = commands.add_parser(
        "doctor",
        parents=[serve],
        add_help=False,
        help="check a configuration as `serve` would, and report (paste it into an issue)",
        description="Run serve's start-up checks with these options and variables, without "
        "serving; report who can reach each listener, what the policy allows and what a "
        "client sets. Exit status 1 when a check is an error.",
    )
    doctor.add_argument("--format", choices=["text", "json"], default="text")

    check = commands.add_parser(
        "check",
        help="show how the policy decides a request, e.g. 'POST /v1.41/containers/create'",
        epilog="Exit status: 0 allowed, 1 denied, 2 error, 3 decided by a look-up in the daemon "
        "(ownership, named volumes). serve's DOCKGATE_ variables apply to the options the two "
        "share (DOCKGATE_POLICY, DOCKGATE_ALLOW_HOST, ...), DOCKGATE_HTPASSWD or "
        "DOCKGATE_TOKENS means --auth-required, and DOCKGATE_TLS_CERT --tls: run in a "
        "gateway's environment, check decides as that gateway.",
    )
    # One argument ('GET /path') or two (GET /path): the shell's quoting is not the point.
    check.add_argument("request", nargs="+", metavar="METHOD /path")
    check.add_argument("--host", default=None, help="the Host header to assume")
    check.add_argument("--origin", default=None, help="the Origin header to assume")
    check.add_argument("--upgrade", action="store_true", help="assume an Upgrade header")
    check.add_argument(
        "--as",
        dest="caller",
        default=None,
        metavar="WHO",
        help="the caller: user:NAME, token:TOKEN-NAME:IDENTITY, certificate:NAME, anonymous "
        "(default), or a unix-socket peer: container:NAME (with --container-label, "
        "--container-image, --container-service) or process:UID[:GID]",
    )
    check.add_argument(
        "--container-label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --as container:NAME, a label of the calling container (repeatable)",
    )
    check.add_argument(
        "--container-image", default="", metavar="IMAGE", help="... its image, as created"
    )
    check.add_argument(
        "--container-service", default="", metavar="NAME", help="... its Swarm service"
    )
    check.add_argument(
        "--source", default="127.0.0.1", metavar="ADDR", help="the client address to assume"
    )
    check.add_argument(
        "--body",
        default=None,
        metavar="FILE",
        help="the request body (JSON), judged by the policy's guardrails ('-' for stdin)",
    )
    check.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="another request header, e.g. 'Content-Type: application/x-tar'; repeatable",
    )
    check.add_argument(
        "--tls",
        action="store_true",
        help="the listener speaks TLS (serve --tls-cert): the gateway's own origin is "
        "https://HOST, not http://HOST",
    )
    check.add_argument(
        "--upstream",
        default=None,
        metavar="ADDR",
        help="a daemon (unix:///path or tcp://HOST:PORT, plain) to ask the look-up of a "
        "request about one object under a scope (objects:): lists and inspects only",
    )
    check.add_argument(
        "--auth-required",
        action="store_true",
        help="the gateway asks for credentials (serve --htpasswd or --tokens): an anonymous "
        "caller not bound as such is answered 401",
    )
    _policy_options(check)

    learn = commands.add_parser(
        "learn",
        help="write the tightest policy file that allows what an audit log shows",
        description="Read audit logs (serve --audit-log) and write a policy file allowing "
        "exactly the operations, host paths, images, ... each identity used (docs/rollout.md). "
        "With --policy, print what that policy would have denied of the logged requests.",
    )
    learn.add_argument(
        "--from",
        dest="sources",
        action="append",
        required=True,
        metavar="AUDIT_LOG",
        help="an audit log (JSON lines); '-' for stdin; repeatable",
    )
    learn.add_argument(
        "--identity",
        default=None,
        metavar="NAME",
        help="learn only this caller (:anonymous for callers without credentials)",
    )
    learn.add_argument(
        "--policy",
        dest="current",
        default=None,
        metavar="CURRENT",
        help="print what this policy file would have denied, grouped by reason (the learned "
        "policy is then written only with --out)",
    )
    learn.add_argument("--out", default=None, metavar="FILE", help="write the policy here")

    policy = commands.add_parser("policy", help="policy file tools")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True)
    validate = policy_commands.add_parser("validate", help="check a policy file; exit 1 if bad")
    validate.add_argument("file")
    presets = policy_commands.add_parser(
        "presets",
        help="list the shipped presets, or show one (NAME) and what it allows",
        description="Presets are policies for well-known clients: `policies: {traefik: "
        "{preset: traefik}}` is a whole policy (docs/presets.md).",
    )
    presets.add_argument("name", nargs="?", default=None)

    credtools.add_commands(commands)  # htpasswd add/remove/list, token create/list/revoke
    return parser


ENV_PREFIX = "DOCKGATE_"
# Repeatable options given by variables: dest -> values, used when the command line has none.
_ENV_LISTS: dict[str, list[str]] = {}
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


# Every DOCKGATE_ variable an option reads (startup/envwarnings.py warns about the others).
ENV_OPTION_NAMES: set[str] = set()
# Options given by variables: --option -> (variable, value), to name the variable in errors.
_ENV_NAMES: dict[str, tuple[str, str]] = {}


class EnvironmentOptionError(ValueError):
    """A DOCKGATE_ variable that does not fit its option."""


def _check_environment_type(action: argparse.Action, name: str, value: str) -> None:
    """argparse converts a string default with the option's type at parse time, and reports a
    bad one as the option's (`--workers`) with the usage: say it here, naming the variable."""
    if not callable(action.type):
        return
    try:
        action.type(value)
    except (ValueError, TypeError):
        kind = (
            "a whole number"
            if action.type is int
            else "a number"
            if action.type is float
            else "a valid value"
        )
        raise EnvironmentOptionError(
            f"{name}={value!r}: {kind} is needed (the variable sets {action.option_strings[-1]})"
        ) from None


def _named_variable(message: str, argv: Sequence[str]) -> str:
    """An error about an option that came from a DOCKGATE_ variable (not given on the command
    line), said about the variable: the user never typed the option."""
    given = {token.partition("=")[0] for token in argv if token.startswith("--")}
    for option, (name, value) in _ENV_NAMES.items():
        if option in given:
            continue
        # An address's user info (DOCKGATE_UPSTREAM=tcp://USER:PASSWORD@HOST) is never
        # quoted: addresses.py's messages show it as `***@`, and so does this one.
        shown = shown_address(value)
        if message.startswith(option + ":") or message.startswith(option + " "):
            return f"{name}={shown!r} ({option}){message[len(option) :]}"
        if value.strip() and repr(shown_address(value.strip())) in message:
            return f"{name}: {message}"
    return message


def _defaults_from_environment(parser: argparse.ArgumentParser, env: dict[str, str]) -> None:
    """Give each option of `parser` the default its DOCKGATE_ variable says (for containers:
    a Swarm service or compose file sets variables, not arguments)."""
    # What an earlier parser (an earlier `main` in the same process) found is not this
    # environment's.
    _ENV_LISTS.clear()
    _ENV_NAMES.clear()
    for action in parser._actions:
        long = [o for o in action.option_strings if o.startswith("--")]
        if not long or action.dest == "help":
            continue
        name = ENV_PREFIX + long[0][2:].upper().replace("-", "_")
        ENV_OPTION_NAMES.add(name)
        value = env.get(name)
        if value is None:
            continue
        _ENV_NAMES[long[0]] = (name, value)
        _check_environment_type(action, name, value)
        if isinstance(action, argparse._StoreTrueAction):
            lowered = value.strip().lower()
            if lowered not in _TRUE | _FALSE:
                raise EnvironmentOptionError(f"{name}={value!r}: use 1/true/yes or 0/false/no")
            action.default = lowered in _TRUE
        elif isinstance(action, argparse._AppendAction):
            # Not a default: argparse would append the command line's values to it, and the
            # command line must replace the variable's. Applied after parsing (main).
            _ENV_LISTS[action.dest] = [item.strip() for item in value.split(",") if item.strip()]
        else:
            action.default = value


def _warn_about_environment(args: argparse.Namespace) -> None:
    """Variables that look meant for dockgate but are ignored (startup/envwarnings.py)."""
    for warning in environment_warnings(
        os.environ, ENV_OPTION_NAMES, compatibility=args.policy is None
    ):
        print(f"dockgate: warning: {warning}", file=sys.stderr)


def _policy_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--policy",
        metavar="FILE",
        default=None,
        help="policy file (.yaml/.yml or .toml); without it, Tecnativa-style variables apply",
    )
    parser.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a web origin allowed to call the API (scheme://host[:port]); repeatable",
    )
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a DNS name accepted in the Host header; repeatable",
    )
    parser.add_argument(
        "--allow-source",
        action="append",
        default=[],
        metavar="CIDR",
        help="only these client addresses may connect (IP, CIDR or 'unix'); repeatable",
    )
    parser.add_argument(
        "--deny-source",
        action="append",
        default=[],
        metavar="CIDR",
        help="these client addresses are refused (wins over --allow-source); repeatable",
    )


def _serve_config(args: argparse.Namespace) -> ServeConfig:
    config, upstream_tls = _serve_config_and_tls(args)
    if upstream_tls is not None:
        print(
            f"dockgate: upstream {config.upstream}: {describe_upstream_tls(upstream_tls)}",
            file=sys.stderr,
        )
    return config


def _serve_config_and_tls(
    args: argparse.Namespace,
) -> tuple[ServeConfig, UpstreamTLSFiles | None]:
    upstream, upstream_tls = resolve_upstream(
        args.upstream,
        os.environ,
        DEFAULT_UPSTREAM,
        ca=args.upstream_tls_ca,
        cert=args.upstream_tls_cert,
        key=args.upstream_tls_key,
    )
    try:
        socket_mode = int(args.socket_mode, 8)
    except ValueError:
        raise ValueError(f"--socket-mode {args.socket_mode!r} is not an octal mode") from None
    config = ServeConfig(
        listen=[parse_address(text) for text in (args.listen or [DEFAULT_LISTEN])],
        upstream=upstream,
        insecure=args.insecure,
        log_format=args.log_format,
        access_log=args.access_log,
        workers=args.workers,
        header_timeout=args.header_timeout,
        idle_timeout=args.idle_timeout,
        body_timeout=args.body_timeout,
        held_bodies_max=args.held_bodies_max,
        shutdown_timeout=args.shutdown_timeout,
        socket_mode=socket_mode,
        socket_group=args.socket_group,
        upstream_pool_size=args.upstream_pool_size,
        max_header_bytes=args.max_header_bytes,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        htpasswd=args.htpasswd,
        tokens=args.tokens,
        tls_identity=tuple(f.strip() for f in args.tls_identity.split(",") if f.strip()),
        trusted_proxies=parse_address_list(args.trusted_proxy),
        proxy_protocol=args.proxy_protocol,
        auth_failures=args.auth_failures,
        auth_failures_per_user=args.auth_failures_per_user,
        auth_failure_window=args.auth_failure_window,
        audit_log=args.audit_log,
        admin_listen=parse_address(args.admin_listen) if args.admin_listen else None,
        shared_events=not args.no_shared_events,
    )
    return config, upstream_tls


def _config_error(exc: ValueError, argv: Sequence[str]) -> str:
    """What `serve` says about options (or variables) that make no configuration."""
    message = _validation_message(exc) if isinstance(exc, ValidationError) else str(exc)
    if isinstance(exc, AddressListError):
        message = f"--trusted-proxy: {message}"
    return _named_variable(message, argv)


def _doctor(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """`dockgate doctor`: `serve`'s configuration and policies, built by the same functions,
    then its checks and a report (startup/doctorprobe.py, startup/doctor.py); 1 when a check is an
    error."""
    setup = Setup(None, None, "plain", None, None)
    try:
        setup.config, upstream_tls = _serve_config_and_tls(args)
        if upstream_tls is not None:
            setup.upstream_link = describe_upstream_tls(upstream_tls)
    except ValueError as exc:  # AddressError, UpstreamTLSError and pydantic's among them
        setup.config_error = _config_error(exc, argv)
    try:
        setup.policies, setup.policy_warnings = _policies_and_warnings(args)
    except AddressListError as exc:
        setup.policy_error = f"--allow-source/--deny-source: {exc}"
    except (PolicyError, EnvironmentError_) as exc:
        setup.policy_error = str(exc)
    setup.environment_warnings = environment_warnings(
        os.environ, ENV_OPTION_NAMES, compatibility=args.policy is None
    )
    report = diagnose(setup)
    sys.stdout.write(doctor_json(report) if args.format == "json" else doctor_text(report))
    return report.exit_code


def _validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    message = str(first["msg"]).removeprefix("Value error, ")
    if not first["loc"]:
        return message
    where = "--" + str(first["loc"][0]).replace("_", "-")
    return f"{where}: {message}"


def _load_policies(args: argparse.Namespace) -> PolicySet:
    policies, warnings = _policies_and_warnings(args)
    for warning in warnings:
        print(f"dockgate: warning: {warning}", file=sys.stderr)
    return policies


def _policies_and_warnings(args: argparse.Namespace) -> tuple[PolicySet, list[str]]:
    return load_policies(
        args.policy,
        os.environ,
        origins=args.allow_origin,
        hosts=args.allow_host,
        sources=SourceRules(
            parse_address_list(args.allow_source), parse_address_list(args.deny_source)
        ),
    )


# The options `check` shares with `serve` (_policy_options), by their destination.
_POLICY_LISTS = ("allow_origin", "allow_host", "allow_source", "deny_source")


def _check_from_environment(args: argparse.Namespace) -> None:
    """`check` decides as the gateway configured by this environment would: the DOCKGATE_
    variables of the options it shares with `serve` apply as they do to `serve` (the command
    line wins); a gateway given DOCKGATE_HTPASSWD or DOCKGATE_TOKENS asks for credentials
    (--auth-required), and one given DOCKGATE_TLS_CERT speaks TLS (--tls). Without this,
    `check` in a gateway's container (DOCKGATE_POLICY set) judged by the Tecnativa variables
    instead of the gateway's policy file."""
    if args.policy is None and "--policy" in _ENV_NAMES:
        args.policy = _ENV_NAMES["--policy"][1]
    for dest in _POLICY_LISTS:
        if not getattr(args, dest) and dest in _ENV_LISTS:
            setattr(args, dest, _ENV_LISTS[dest])
    if not args.auth_required:
        args.auth_required = any(_variable(option) for option in ("--htpasswd", "--tokens"))
    if not args.tls:
        args.tls = bool(_variable("--tls-cert"))


def _variable(option: str) -> str:
    """The value the DOCKGATE_ variable of serve's `option` gives it ("" when unset)."""
    return _ENV_NAMES.get(option, ("", ""))[1].strip()


def _check(args: argparse.Namespace) -> int:
    """`dockgate check`: the gateway's own admission and plan, explained (check.py)."""
    method, _, target = " ".join(args.request).strip().partition(" ")
    target = target.strip()
    if not target.startswith("/") or " " in target:
        print(
            "dockgate: error: give the request as METHOD /path, e.g. dockgate check GET "
            "/v1.41/containers/json",
            file=sys.stderr,
        )
        return 2
    policies = _load_policies(args)
    if args.source != UNIX_SOURCE:
        try:
            ipaddress.ip_address(args.source)
        except ValueError:
            raise CallerError(f"--source {args.source!r}: an IP address, or 'unix'") from None
    for line in args.header:
        if ":" not in line or "\r" in line or "\n" in line:
            raise CallerError(f"--header {line!r}: give it as 'Name: value'")
    body = None
    if args.body is not None:
        try:
            body = sys.stdin.buffer.read() if args.body == "-" else Path(args.body).read_bytes()
        except OSError as exc:
            raise CallerError(f"--body {args.body}: {exc.strerror or exc}") from None
    request = CheckRequest(
        method=method,
        target=target,
        caller=_peer_caller(args) or _caller(args.caller),
        # a unix-socket peer calls on the unix socket
        source=UNIX_SOURCE if _is_peer(args.caller) else args.source,
        host=args.host,
        origin=args.origin,
        upgrade=args.upgrade,
        headers=tuple(args.header),
        body=body,
        credentials_required=args.auth_required,
        tls=args.tls,
        upstream=_check_upstream(args.upstream),
    )
    out: list[str] = []
    status = run_check(request, policies, out)
    print("\n".join(out))
    return status


def _check_upstream(text: str | None) -> Address | None:
    """check's `--upstream`: a plain daemon address (no TLS options: check asks read-only
    look-ups, run it where the socket is)."""
    if text is None:
        return None
    try:
        return parse_address(text)
    except AddressError as exc:
        raise CallerError(f"--upstream {exc}") from None


def _caller(text: str | None) -> Identity:
    """`user:alice`, `token:ci-runner:ci`, `certificate:ops`, `anonymous` (the default)."""
    if text is None or text == "anonymous":
        return ANONYMOUS_IDENTITY
    kind, _, rest = text.partition(":")
    if kind == "user" and rest:
        return Identity(rest, BASIC)
    if kind == "certificate" and rest:
        return Identity(rest, CERTIFICATE)
    name, _, identity = rest.partition(":")
    if kind == "token" and name and identity:
        return Identity(identity, TOKEN, name)
    raise CallerError(
        f"--as {text!r}: use user:NAME, token:TOKEN-NAME:IDENTITY, certificate:NAME or anonymous"
    )


def _is_peer(text: str | None) -> bool:
    return text is not None and text.partition(":")[0] in ("container", "process")


def _peer_caller(args: argparse.Namespace) -> Identity | None:
    """`--as container:NAME` (with --container-label, --container-image, --container-service)
    or `--as process:UID[:GID]`: a caller its unix-socket peer names (auth/peerlookup.py);
    None for another --as."""
    text = args.caller
    given = args.container_label or args.container_image or args.container_service
    if not _is_peer(text):
        if given:
            raise CallerError("--container-label/-image/-service go with --as container:NAME")
        return None
    kind, _, rest = text.partition(":")
    if kind == "process":
        uid, _, gid = rest.partition(":")
        if not uid.isdigit() or (gid and not gid.isdigit()):
            raise CallerError(f"--as {text!r}: use process:UID or process:UID:GID")
        if given:
            raise CallerError("--container-label/-image/-service go with --as container:NAME")
        return Identity(f"uid:{int(uid)}", PROCESS, f"gid:{int(gid or uid)}")
    name = rest.removeprefix("/")
    if not name:
        raise CallerError(f"--as {text!r}: use container:NAME")
    labels = []
    for item in args.container_label:
        key, equals, value = item.partition("=")
        if not key or not equals:
            raise CallerError(f"--container-label {item!r}: give it as KEY=VALUE")
        labels.append((key, value))
    # (never from the label: the gateway takes a container's service from the swarm only,
    # auth/peerlookup.py swarm_service)
    service = args.container_service
    facts = ContainerFacts(
        id="0" * 64,  # (no container: the binding never looks at the ID)
        name=name,
        labels=tuple(sorted(labels)),
        image=args.container_image,
        service=service,
    )
    return Identity(name, CONTAINER, facts.id, container=facts)


class CallerError(ValueError):
    """A --as value that names no kind of caller."""


def _validate(path: str) -> int:
    try:
        policies = load_policy_file(path)
    except PolicyError as exc:
        print(f"dockgate: error: {exc}", file=sys.stderr)
        return 1
    names = ", ".join(policies.policies)
    who = (
        f"{len(policies.bindings)} bindings"
        if policies.bindings is not None
        else f"default {policies.default}"
    )
    print(f"{path}: ok ({len(policies.policies)} policies: {names}; {who})")
    return 0


def _learn(args: argparse.Namespace) -> int:
    """`dockgate learn`: the reading and writing; policy/learn.py and learndiff.py decide."""
    read = ReadResult()
    for source in args.sources:
        try:
            if source == "-":
                read_records(sys.stdin, read)
            else:
                with open(source, encoding="utf-8", errors="replace") as lines:
                    read_records(lines, read)
        except OSError as exc:
            raise CallerError(f"--from {source}: {exc.strerror or exc}") from None
    if read.bad_lines:
        print(f"dockgate: {read.bad_lines} lines were not audit records (skipped)", file=sys.stderr)
    records = [
        r for r in read.records if args.identity is None or r.get("identity") == args.identity
    ]
    if args.current is not None:
        current = load_policy_file(args.current)
        print("\n".join(learn_diff(records, current).lines(args.current)))
        if args.out is None:
            return 0
    learner = Learner()
    for record in records:
        learner.add(record)
    try:
        text = learner.document(args.identity, args.sources)
    except LearnError as exc:
        print(f"dockgate: error: {exc}", file=sys.stderr)
        return 1
    if args.out is None:
        sys.stdout.write(text)
        return 0
    try:
        Path(args.out).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CallerError(f"--out {args.out}: {exc.strerror or exc}") from None
    print(f"dockgate: wrote {args.out}", file=sys.stderr)
    return 0


def _presets(name: str | None) -> int:
    if name is None:
        print("\n".join(list_presets()))
        return 0
    shown = show_preset(name)
    if shown is None:
        print(
            f"dockgate: error: no preset {name!r} (dockgate policy presets lists them)",
            file=sys.stderr,
        )
        return 1
    print("\n".join(shown))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = _build_parser()
    except EnvironmentOptionError as exc:
        print(f"dockgate: error: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if args.command in ("serve", "doctor"):
        for dest, values in _ENV_LISTS.items():
            if not getattr(args, dest):
                setattr(args, dest, values)
    if args.command == "check":
        _check_from_environment(args)
    try:
        if args.command == "check":
            return _check(args)
        if args.command == "learn":
            return _learn(args)
        if args.command == "policy" and args.policy_command == "presets":
            return _presets(args.name)
        if args.command == "policy":
            return _validate(args.file)
        if args.command in credtools.COMMANDS:
            return credtools.run(args)
        if args.command == "doctor":
            return _doctor(args, sys.argv[1:] if argv is None else argv)
    except (PolicyError, EnvironmentError_, CallerError, AddressListError) as exc:
        print(f"dockgate: error: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        _warn_about_environment(args)
        try:
            config = _serve_config(args)
        except (AddressError, ValueError) as exc:
            message = _config_error(exc, sys.argv[1:] if argv is None else argv)
            print(f"dockgate: error: {message}", file=sys.stderr)
            return 2
        watched: WatchedFile[PolicySet] | None = None
        try:
            if args.policy is not None:
                # Watched: a changed file (a new Docker config, an edit) or SIGHUP loads it
                # again; one that does not load leaves the old policies in force.
                watched = WatchedFile(
                    args.policy,
                    lambda _path: _load_policies(args),
                    (PolicyError, EnvironmentError_, AddressListError),
                )
                policies = watched.value
            else:
                policies = _load_policies(args)
        except AddressListError as exc:
            print(f"dockgate: error: --allow-source/--deny-source: {exc}", file=sys.stderr)
            return 2
        except (PolicyError, EnvironmentError_) as exc:
            print(f"dockgate: error: {exc}", file=sys.stderr)
            return 2
        try:
            # Sockets passed by systemd (LISTEN_FDS) replace the default listener (server.py).
            run(config, policies, watched, listen_given=bool(args.listen))
        except StartupError as exc:
            print(f"dockgate: error: {exc}", file=sys.stderr)
            return 2
        return 0
    return 2
