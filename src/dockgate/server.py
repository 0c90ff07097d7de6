"""Listeners, worker processes, timeouts and graceful shutdown.

The parent binds every listener once (so `--listen tcp://127.0.0.1:0` gets one real port and
errors are reported once), then serves in-process (`--workers 1`) or forks N workers that accept
on the inherited sockets, the pre-fork design of nginx and gunicorn. The parent restarts a
worker that dies and forwards SIGTERM/SIGINT to all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import grp
import os
import select
import signal
import socket
import stat
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import uvloop

from dockgate.addresses import Address
from dockgate.auth.authenticator import Authenticator
from dockgate.auth.checks import CheckPool
from dockgate.auth.filemode import credential_file_warnings
from dockgate.auth.htpasswd import HtpasswdError
from dockgate.auth.identity import CERTIFICATE, Identity
from dockgate.auth.throttle import FailureThrottle, ThrottleSettings
from dockgate.auth.tokens import TokenFileError
from dockgate.config import ServeConfig
from dockgate.observe.accesslog import AccessLog, open_access_log
from dockgate.observe.admin import AdminConnection
from dockgate.observe.audit import AuditLog, open_audit_log
from dockgate.observe.logtext import printable
from dockgate.observe.metrics import (
    SNAPSHOT_SECONDS,
    RequestCounts,
    SnapshotDirectory,
)
from dockgate.observe.metrics import render as render_metrics
from dockgate.policy.admission import Admissions, ConnectionFacts
from dockgate.policy.gatekeeper import Gatekeeper
from dockgate.policy.rules import PolicySet
from dockgate.policy.summary import summaries
from dockgate.relay.connection import ClientConnection
from dockgate.relay.context import ConnectionContext
from dockgate.relay.eventfeed import EventFeeds
from dockgate.relay.holding import HoldBudget
from dockgate.relay.tls import (
    PEER_CERTIFICATE_INFO,
    ServerTLS,
    SeveralNames,
    TLSConfigError,
    TLSProtocol,
    peer_identity,
    peer_subject,
)
from dockgate.relay.upstream import UpstreamPool
from dockgate.startup import dropin
from dockgate.startup.checks import (
    StartupCheckError,
    check_certificate_files,
    check_upstream_socket,
    ping_upstream,
    refuse_own_listener,
)
from dockgate.startup.peerns import peer_warnings
from dockgate.startup.systemd import (
    ActivationError,
    Inherited,
    Notifier,
    check_listen_option,
    inherited_sockets,
)
from dockgate.watched import WatchedFile

LISTEN_BACKLOG = 1024
SWEEP_INTERVAL_SECONDS = 0.5
SHUTDOWN_POLL_SECONDS = 0.05
WORKER_RESTART_DELAY_SECONDS = 1.0
# With workers, how long the parent waits for each to say it reloaded (SIGHUP) before it tells
# systemd READY=1 anyway (a worker that died meanwhile never says so).
RELOAD_REPORT_SECONDS = 5.0

# What a serving process reports (Report): its listeners accept, a SIGHUP reload begins and
# ends, it stops. One process tells systemd itself; workers tell the parent (_WorkerReports).
READY, RELOADING, RELOADED, STOPPING = "ready", "reloading", "reloaded", "stopping"
Report = Callable[[str], None]


class StartupError(Exception):
    """The gateway refuses to start; the message says why in one line."""


class Gateway:
    """Per-process state shared by all client connections."""

    def __init__(
        self, config: ServeConfig, loop: asyncio.AbstractEventLoop, loaded: Loaded
    ) -> None:
        self.config = config
        self.tls = loaded.tls
        self.loop = loop
        self.authenticator = loaded.authenticator
        self._throttle = FailureThrottle(
            ThrottleSettings(
                per_source=config.auth_failures,
                per_user=config.auth_failures_per_user,
                window_s=config.auth_failure_window,
            )
        )
        # Like the throttle, one per process, kept across policy reloads.
        self._checks = CheckPool()
        self._policy_file = loaded.policy_file
        # Set by _install, again on each reload of the policy file.
        self.gatekeeper: Gatekeeper
        self.admissions: Admissions
        self._install(loaded.policies)
        self.pool = UpstreamPool(config.upstream, config.upstream_pool_size)
        self.access_log: AccessLog = open_access_log(config.access_log, config.log_format)
        self.audit: AuditLog = open_audit_log(config.audit_log)
        self._admin = loaded.admin
        self.connections: set[ClientConnection] = set()
        # Every body and answer held whole, together (relay/holding.py).
        self.holds = HoldBudget(config.held_bodies_max)
        self._sweeper: asyncio.Task[None] | None = None
        self.metrics = RequestCounts()
        self._snapshots = loaded.snapshots
        self._snapshot_due = 0.0
        # What each client connection uses of this process (relay/context.py).
        self.context = ConnectionContext(
            loop=loop,
            pool=self.pool,
            admissions=self.admissions,
            holds=self.holds,
            metrics=self.metrics,
            access_log=self.access_log,
            audit=self.audit,
            max_header_bytes=config.max_header_bytes,
            header_timeout=config.header_timeout,
            idle_timeout=config.idle_timeout,
            body_timeout=config.body_timeout,
            add_certificate=self.add_certificate,
            expects_proxy_header=self.expects_proxy_header,
            connections=self.connections,
            event_feeds=EventFeeds(loop, self.pool) if config.shared_events else None,
        )

    def connection_factory(self) -> ClientConnection:
        return ClientConnection(self.context)

    def add_certificate(
        self, transport: asyncio.Transport, client: str, facts: ConnectionFacts
    ) -> None:
        """On a TLS listener that requires client certificates: the verified certificate, to be
        checked again on each request, and the caller it names (none when it has none of the
        --tls-identity fields; none, with the reason logged once, when it names several)."""
        if self.tls is None or self.tls.client_ca is None:
            return
        facts.peer_certificate = transport.get_extra_info(PEER_CERTIFICATE_INFO)
        cert = transport.get_extra_info("peercert")
        subject = peer_subject(cert)
        try:
            name = peer_identity(cert, self.config.tls_identity)
        except SeveralNames as exc:
            # The subject is the certificate holder's text, printed escaped: one log line
            # (SeveralNames lists the values with repr(), escaped already).
            reason = f"the client certificate {printable(subject)} names several callers: {exc}"
            facts.certificate_refusal = reason
            print(f"dockgate: {client}: {reason}; refused", file=sys.stderr, flush=True)
            return
        if name:
            facts.certificate = Identity(name, CERTIFICATE, subject)

    def expects_proxy_header(self, address: str) -> bool:
        config = self.config
        return config.proxy_protocol and config.trusted_proxies.contains(address)

    async def serve(
        self,
        listeners: list[tuple[Address, socket.socket]],
        stop: asyncio.Event,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        servers: list[asyncio.AbstractServer] = []
        for address, sock in listeners:
            if address.scheme == "unix":
                server = await self.loop.create_unix_server(
                    self.connection_factory, sock=sock, backlog=LISTEN_BACKLOG
                )
            elif self.tls is not None:
                server = await self.loop.create_server(
                    self._tls_factory(self.tls), sock=sock, backlog=LISTEN_BACKLOG
                )
            else:
                server = await self.loop.create_server(
                    self.connection_factory, sock=sock, backlog=LISTEN_BACKLOG
                )
            servers.append(server)
        if self._admin is not None:
            address, sock = self._admin
            upstream = self.config.upstream
            factory = lambda: AdminConnection(upstream, self.metrics_text)  # noqa: E731
            if address.scheme == "unix":
                server = await self.loop.create_unix_server(factory, sock=sock)
            else:
                server = await self.loop.create_server(factory, sock=sock)
            servers.append(server)
        self._sweeper = self.loop.create_task(self._sweep(), name="dockgate-timeout-sweep")
        if on_ready is not None:
            on_ready()  # every server accepts: READY=1 for systemd (startup/systemd.py)
        try:
            await stop.wait()
        finally:
            await self._shutdown(servers)

    def _tls_factory(self, tls: ServerTLS) -> Callable[[], TLSProtocol]:
        timeout = self.config.header_timeout
        return lambda: TLSProtocol(self.connection_factory, tls, timeout, self.expects_proxy_header)

    def reload(self, *, force: bool = False) -> None:
        """Take a changed policy file (and, with `force`, for SIGHUP: the credential files and
        TLS certificates too). A file that does not load leaves the old one in force; requests
        already decided are not affected, new ones get the new policies."""
        now = time.monotonic()
        if force:
            self.authenticator.refresh(now, force=True)
            if self.tls is not None:
                self.tls.reload_now()
        watched = self._policy_file
        if watched is None or not watched.refresh(now, force=force):
            return
        self._install(watched.value)
        self.context.admissions = self.admissions  # for the requests that follow
        for warning in watched.value.mode_warnings(audited=self.config.audit_log != "off"):
            print(f"dockgate: warning: {warning}", file=sys.stderr, flush=True)

    def _install(self, policies: PolicySet) -> None:
        """Put `policies` in force for the requests that follow (at start, and on reload)."""
        # Whether a caller authenticated is decided per request (admission passes it to every
        # check), so the gatekeeper is given no default for it.
        self.gatekeeper = Gatekeeper(
            policies,
            tls=self.tls is not None,  # TCP listeners speak TLS: the gateway's origin is https
        )
        tls = self.tls  # client certificates are checked again, on each request, against it
        self.admissions = Admissions(
            policies,
            self.gatekeeper,
            self.authenticator,
            self._throttle,
            self.config.trusted_proxies,
            checks=self._checks,
            proxy_protocol=self.config.proxy_protocol,
            trust=tls.trust if tls is not None and tls.requires_client_cert else None,
        )

    def metrics_text(self) -> bytes:
        """`GET /metrics` on the admin listener: this process's counts, and the other
        workers' last snapshots (this one's written first, so no later scrape counts less)."""
        own = self._counts_now()
        counts = RequestCounts()
        counts.add(own, gauges=True)
        if self._snapshots is not None:
            pid = os.getpid()
            self._snapshots.write(pid, own)
            for other, alive in self._snapshots.others(pid):
                counts.add(other, gauges=alive)
        return render_metrics(counts, self.config.workers)

    def _counts_now(self) -> RequestCounts:
        counts = self.metrics
        counts.open_connections = len(self.connections)
        counts.open_tunnels = sum(1 for conn in self.connections if conn.tunnel is not None)
        watched: list[tuple[str, WatchedFile[Any]]] = self.authenticator.watched()
        if self._policy_file is not None:
            watched.append(("policy", self._policy_file))
        counts.reloads = {name: [w.generation, w.failures] for name, w in watched}
        return counts

    async def _sweep(self) -> None:
        """Close connections whose request head or held body did not arrive in time
        (slowloris, idle), look for a changed policy file, and leave this worker's metrics
        for the others."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_SECONDS)
            self._sweep_step("pass", self._sweep_once)

    def _sweep_once(self) -> None:
        """One pass. Each step is tried on its own: a step that fails every time (a reload
        that raises) must not take the timeouts or the metrics snapshot with it."""
        self._sweep_step("reload", self.reload)
        now = self.loop.time()
        for conn in list(self.connections):
            self._sweep_step("timeouts", functools.partial(self._time_out, conn, now))
        # Last, so that this pass's failures reach the other workers' scrapes.
        self._sweep_step("snapshot", lambda: self._write_snapshot(now))

    def _sweep_step(self, name: str, step: Callable[[], object]) -> None:
        try:
            step()
        except Exception as exc:  # the sweeper must keep running whatever one step hit
            self.metrics.sweep_failures += 1  # dockgate_sweep_failures_total
            print(
                f"dockgate: sweep failed in {name} ({type(exc).__name__}: {exc}); continuing",
                file=sys.stderr,
                flush=True,
            )

    @staticmethod
    def _time_out(conn: ClientConnection, now: float) -> None:
        deadline = conn.deadline
        if deadline is not None and now > deadline:
            conn.head_timed_out()
        deadline = conn.body_deadline
        if deadline is not None and now > deadline:
            conn.body_timed_out()

    def _write_snapshot(self, now: float) -> None:
        if self._snapshots is not None and now >= self._snapshot_due:
            self._snapshot_due = now + SNAPSHOT_SECONDS
            self._snapshots.write(os.getpid(), self._counts_now())

    async def _shutdown(self, servers: list[asyncio.AbstractServer]) -> None:
        for server in servers:
            server.close()
        for conn in list(self.connections):
            if conn.idle() and not conn.reader.started:
                conn.close_now()
            else:
                conn.close_after_exchange = True
        deadline = self.loop.time() + self.config.shutdown_timeout
        # Polling is simpler than an event per exchange and costs nothing on the request path.
        while self.loop.time() < deadline and any(not c.idle() for c in self.connections):  # noqa: ASYNC110
            await asyncio.sleep(SHUTDOWN_POLL_SECONDS)
        for conn in list(self.connections):
            conn.close_now()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        # Let transports flush and run connection_lost before the loop stops.
        await asyncio.sleep(0)
        self.pool.close_all()
        self._checks.close()
        self.access_log.flush()
        self.audit.flush()


# ----- listeners --------------------------------------------------------------------------------


def _bind_tcp(address: Address) -> socket.socket:
    try:
        infos = socket.getaddrinfo(
            address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise StartupError(f"cannot resolve {address}: {exc.strerror}") from None
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot listen on {address}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


def _bind_unix(address: Address, mode: int, group: str | None) -> socket.socket:
    path = address.path
    if os.path.exists(path):
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            raise StartupError(f"cannot listen on {address}: the path exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # a stale socket from a previous run
        else:
            raise StartupError(f"cannot listen on {address}: another process is listening there")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, mode)
        if group is not None:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
            os.chown(path, -1, gid)
        sock.listen(LISTEN_BACKLOG)
    except KeyError:
        _discard_unix(sock, path)
        raise StartupError(f"--socket-group: no group named {group!r}") from None
    except OSError as exc:
        _discard_unix(sock, path)
        raise StartupError(f"cannot listen on {address}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


def _discard_unix(sock: socket.socket, path: str) -> None:
    """Close a unix listener and remove its file, if this process created it."""
    try:
        bound = sock.getsockname() == path
    except OSError:
        bound = False
    sock.close()
    if bound:
        with contextlib.suppress(OSError):
            os.unlink(path)


def bind_listeners(config: ServeConfig) -> list[tuple[Address, socket.socket]]:
    bound: list[tuple[Address, socket.socket]] = []
    try:
        for address in config.listen:
            if address.scheme == "unix":
                sock = _bind_unix(address, config.socket_mode, config.socket_group)
                bound.append((address, sock))
            else:
                sock = _bind_tcp(address)
                bound.append((address.with_port(sock.getsockname()[1]), sock))
    except BaseException:
        for address, sock in bound:
            if address.scheme == "unix":
                _discard_unix(sock, address.path)
            else:
                sock.close()
        raise
    return bound


def bind_admin(config: ServeConfig) -> tuple[Address, socket.socket] | None:
    address = config.admin_listen
    if address is None:
        return None
    try:
        if address.scheme == "unix":
            return address, _bind_unix(address, config.socket_mode, config.socket_group)
        sock = _bind_tcp(address)
    except OSError as exc:
        raise StartupError(f"--admin-listen {address}: {exc.strerror or exc}") from None
    return address.with_port(sock.getsockname()[1]), sock


def check_exposure(
    config: ServeConfig, policies: PolicySet, inherited: Sequence[Inherited] = ()
) -> PolicySet:
    """Refuse a non-loopback TCP listener without authentication unless --insecure is given,
    or the container drop-in rule (startup/dropin.py) finds that only the container's networks
    reach it.

    TLS with required client certificates (--tls-client-ca) authenticates every TCP client;
    TLS alone only encrypts, so it still needs --insecure. A unix socket systemd passed that
    every local user may connect to (abstract, or mode o+w: systemd's default SocketMode= is
    0666) is exposed too: dockgate did not set its mode, so it cannot count on it. Returns
    `policies` with the names other containers reach this one by accepted as Host
    (policy/browser.py), when the daemon said.
    """
    authenticated = config.htpasswd is not None or config.tokens is not None
    open_unix = {one.address for one in inherited if one.open_to_all}
    exposed = [
        address
        for address in config.listen
        if (not address.is_loopback() or address in open_unix)
        and not authenticated
        and not (address.scheme != "unix" and config.client_certificates_required)
    ]
    if not exposed:
        return policies
    names = ", ".join(str(a) for a in exposed)
    verdict = (
        dropin.Verdict(None, "the listeners are sockets systemd passed")
        if inherited
        else dropin.judge(config.upstream, policies, exposed)
    )
    if verdict.names:
        policies = dataclasses.replace(policies, hosts=policies.hosts | verdict.names)
    if verdict.reason is None and verdict.found is not None and not config.insecure:
        print(dropin.warning_line(names, verdict.found, os.environ), file=sys.stderr, flush=True)
        return policies
    if not config.insecure:
        fix = (
            "In the .socket unit, listen on loopback (ListenStream=127.0.0.1:2375) or a unix "
            "socket with SocketMode=0660 and SocketGroup=docker"
            if inherited
            else "Listen on loopback or a unix socket"
        )
        # A socket in a directory others may write to: its mode says nothing (systemd.swappable).
        swapped = "".join(
            f" {one.address}: {one.swappable}, so another user may swap the socket for a file "
            "of their own; put it in a directory only root may write to (/run, or the "
            "service's RuntimeDirectory=)."
            for one in inherited
            if one.swappable and one.address in exposed
        )
        raise StartupError(
            f"refusing to listen on {names} without authentication: whoever reaches it is root "
            f"on this host.{swapped} {fix}, add authentication (--htpasswd, "
            "--tokens or --tls-client-ca), or pass --insecure (DOCKGATE_INSECURE=1 in the "
            "environment) to accept that. Not a container reachable only from its networks: "
            f"{verdict.reason}"
        )
    print(
        f"dockgate: warning: --insecure: {names} accepts anyone who can reach it, with full "
        "control of the Docker daemon (root on this host)",
        file=sys.stderr,
        flush=True,
    )
    return policies


# ----- running ----------------------------------------------------------------------------------


async def _serve_process(
    config: ServeConfig,
    listeners: list[tuple[Address, socket.socket]],
    loaded: Loaded,
    report: Report,
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def stopping() -> None:
        report(STOPPING)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping)
    gateway = Gateway(config, loop, loaded)

    def reload() -> None:
        report(RELOADING)
        try:
            gateway.reload(force=True)
        finally:
            report(RELOADED)

    loop.add_signal_handler(signal.SIGHUP, reload)
    await gateway.serve(listeners, stop, on_ready=lambda: report(READY))


def _run_worker(
    config: ServeConfig,
    listeners: list[tuple[Address, socket.socket]],
    loaded: Loaded,
    report: Report,
) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve_process(config, listeners, loaded, report))


def in_force(policies: PolicySet) -> str:
    """Where the policies come from (a start-up line)."""
    if policies.bindings is not None:
        return f"policies from {policies.source}, {len(policies.bindings)} bindings"
    return f"policy {policies.default} from {policies.source}"


def status_line(policies: PolicySet) -> str:
    """The policies in force, in one line: systemd's STATUS= (`systemctl status` shows it)."""
    if policies.bindings is not None:
        return in_force(policies)
    return f"{in_force(policies)}; {summaries(policies)[0]}"


def _notifier_reports(notifier: Notifier | None, loaded: Loaded) -> Report:
    """One process (no workers): it tells systemd itself. After a reload, the STATUS= line
    says the policies now in force (a file that did not load leaves the old ones)."""

    def report(event: str) -> None:
        if notifier is None:
            return
        if event == READY:
            notifier.ready(status_line(loaded.policies))
        elif event == RELOADING:
            notifier.reloading()
        elif event == RELOADED:
            now = loaded.policy_file.value if loaded.policy_file is not None else None
            notifier.ready("reloaded; " + status_line(now or loaded.policies))
        elif event == STOPPING:
            notifier.stopping()

    return report


def load_tls(config: ServeConfig) -> ServerTLS | None:
    if config.tls_cert is None or config.tls_key is None:
        return None
    try:
        return ServerTLS(config.tls_cert, config.tls_key, config.tls_client_ca)
    except TLSConfigError as exc:
        raise StartupError(str(exc)) from None


def load_authenticator(config: ServeConfig) -> Authenticator:
    """The htpasswd and tokens files, read and checked; errors stop the start. Each worker
    then watches them and reloads on change."""
    try:
        return Authenticator.from_files(config.htpasswd, config.tokens)
    except (HtpasswdError, TokenFileError) as exc:
        raise StartupError(str(exc)) from None


def unknown_binding_names(policies: PolicySet, authenticator: Authenticator) -> list[str]:
    """Bindings that name users or tokens the credential files do not have: most likely a
    typo that binds nobody (the files may still gain them later, hence a warning)."""
    htpasswd, tokens = authenticator.htpasswd, authenticator.tokens
    known_users = set(htpasswd.credentials) if htpasswd else set()
    entries = tokens.by_digest.values() if tokens else ()
    known_users |= {entry.identity for entry in entries}
    known_tokens = {entry.name for entry in entries}
    warnings = []
    for binding in policies.bindings or ():
        where = f"binding {binding.number}" + (f" (line {binding.line})" if binding.line else "")
        for user in sorted(binding.users - known_users):
            warnings.append(f"{where}: user {user!r} is in no --htpasswd or --tokens file")
        for token in sorted(binding.tokens - known_tokens):
            warnings.append(f"{where}: token {token!r} is not in the --tokens file")
    return warnings


@dataclass(frozen=True, slots=True)
class Loaded:
    """What the files name, read once by the parent before it binds (so errors stop the start)
    and inherited by the workers."""

    policies: PolicySet
    tls: ServerTLS | None
    authenticator: Authenticator
    admin: tuple[Address, socket.socket] | None = None  # the admin listener, bound
    # The policy file, watched: a change (or SIGHUP) loads it again; None without a file
    # (policies from variables change with a restart).
    policy_file: WatchedFile[PolicySet] | None = None
    # With several workers: where each leaves its metrics for the one that answers a scrape.
    snapshots: SnapshotDirectory | None = None


def check_log_files(config: ServeConfig) -> None:
    """Create (or open) the log files before anything starts, so a bad path is a one-line
    error at start rather than a worker dying later. New files get mode 600."""
    for option, target in (("--access-log", config.access_log), ("--audit-log", config.audit_log)):
        if target in ("-", "off"):
            continue
        try:
            os.close(os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600))
        except OSError as exc:
            raise StartupError(f"{option} {target}: {exc.strerror or exc}") from None


def _startup_checks(config: ServeConfig) -> list[str]:
    """The upstream socket and the certificate files (startup/checks.py): errors stop the start,
    warnings are printed with the others."""
    try:
        # A unix upstream that is one of the listeners' paths: said before the socket check,
        # which would only find it missing.
        refuse_own_listener(config.upstream, [(address, None) for address in config.listen])
        return check_upstream_socket(config.upstream) + check_certificate_files(config)
    except StartupCheckError as exc:
        raise StartupError(str(exc)) from None


def _after_binding(config: ServeConfig, bound: list[tuple[Address, socket.socket | None]]) -> None:
    """With the listeners bound (their real ports known): refuse an upstream that is one of
    them, then ask the daemon for `_ping` (a warning when it does not answer)."""
    try:
        refuse_own_listener(config.upstream, bound)
    except StartupCheckError as exc:
        raise StartupError(str(exc)) from None
    for warning in ping_upstream(config.upstream):
        print(f"dockgate: warning: {warning}", file=sys.stderr, flush=True)


def _activation(config: ServeConfig, listen_given: bool) -> tuple[ServeConfig, list[Inherited]]:
    """The sockets systemd passed (LISTEN_FDS), if any: they are the listeners, in place of
    --listen's, which may only name them again (systemd.check_listen_option)."""
    try:
        inherited = inherited_sockets(os.environ)
        if inherited and listen_given:
            check_listen_option(inherited, config.listen)
    except ActivationError as exc:
        raise StartupError(str(exc)) from None
    if not inherited:
        return config, []
    return config.model_copy(update={"listen": [one.address for one in inherited]}), inherited


def run(
    config: ServeConfig,
    policies: PolicySet,
    policy_file: WatchedFile[PolicySet] | None = None,
    *,
    listen_given: bool = True,
) -> None:
    """Serve until SIGTERM/SIGINT. `listen_given`: --listen (or DOCKGATE_LISTEN) was given,
    rather than the default, which sockets passed by systemd replace silently."""
    config, inherited = _activation(config, listen_given)
    notifier = Notifier.from_environ(os.environ)
    try:
        _run(config, policies, policy_file, inherited, notifier)
    finally:
        if notifier is not None:
            notifier.close()


def _run(
    config: ServeConfig,
    policies: PolicySet,
    policy_file: WatchedFile[PolicySet] | None,
    inherited: list[Inherited],
    notifier: Notifier | None,
) -> None:
    check_log_files(config)
    early_warnings = _startup_checks(config)
    # After the socket check: the drop-in rule asks the daemon through it.
    policies = check_exposure(config, policies, inherited)
    tls = load_tls(config)
    authenticator = load_authenticator(config)
    admin = bind_admin(config)
    loaded = Loaded(policies, tls, authenticator, admin, policy_file)
    warnings = list(authenticator.htpasswd.warnings) if authenticator.htpasswd else []
    warnings += credential_file_warnings(config.htpasswd, config.tokens)
    warnings += unknown_binding_names(policies, authenticator)
    # Rollout modes: every policy or binding that does not enforce (policy/modes.py).
    warnings += policies.mode_warnings(audited=config.audit_log != "off")
    # Bindings by the unix-socket peer: a unix listener, and the host's PID namespace.
    warnings += peer_warnings(policies, list(config.listen))
    for warning in early_warnings + warnings:
        print(f"dockgate: warning: {warning}", file=sys.stderr, flush=True)
    # Sockets systemd passed are already bound and listening; their unix files are systemd's.
    listeners = [(one.address, one.sock) for one in inherited] or bind_listeners(config)
    try:
        _after_binding(config, [*listeners, *([admin] if admin is not None else [])])
        for one in inherited:
            print(f"dockgate: listening on {one.describe()}", file=sys.stderr, flush=True)
        for address, _ in [] if inherited else listeners:
            print(f"dockgate: listening on {address}", file=sys.stderr, flush=True)
        if tls is not None:
            clients = (
                f"client certificates required (CA {tls.client_ca})"
                if tls.client_ca is not None
                else "no client certificates"
            )
            print(f"dockgate: TLS on TCP listeners, {clients}", file=sys.stderr, flush=True)
        over = " over TLS" if config.upstream.tls is not None else ""
        print(f"dockgate: forwarding to {config.upstream}{over}", file=sys.stderr, flush=True)
        print(f"dockgate: {in_force(policies)}", file=sys.stderr, flush=True)
        for line in summaries(policies):
            print(f"dockgate: {line}", file=sys.stderr, flush=True)
        if config.audit_log != "off":
            print(f"dockgate: audit log to {config.audit_log}", file=sys.stderr, flush=True)
        if admin is not None:
            print(f"dockgate: health and metrics on {admin[0]}", file=sys.stderr, flush=True)
        if config.workers == 1:
            _run_worker(config, listeners, loaded, _notifier_reports(notifier, loaded))
        else:
            snapshots = SnapshotDirectory.create() if admin is not None else None
            if admin is not None and snapshots is None:
                print(
                    "dockgate: warning: no directory for the workers' metrics in /dev/shm or "
                    "/tmp: each scrape shows the counts of the worker that answers it",
                    file=sys.stderr,
                    flush=True,
                )
            try:
                _supervise(
                    config,
                    listeners,
                    dataclasses.replace(loaded, snapshots=snapshots),
                    _WorkerReports(notifier, config.workers, status_line(policies)),
                )
            finally:
                if snapshots is not None:
                    snapshots.remove()
    finally:
        for address, sock in [*listeners, *([admin] if admin is not None else [])]:
            sock.close()  # an inherited one: this process's copy; systemd keeps its own
            if address.scheme == "unix" and all(address != one.address for one in inherited):
                with contextlib.suppress(OSError):
                    os.unlink(address.path)


def _spawn(
    config: ServeConfig,
    listeners: list[tuple[Address, socket.socket]],
    loaded: Loaded,
    reports: _WorkerReports,
) -> int:
    pid = os.fork()
    if pid == 0:  # the worker
        code = 0
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            # Until its loop takes SIGHUP (a reload), not the parent's handler, nor death.
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            _run_worker(config, listeners, loaded, reports.from_worker)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid


class _WorkerReports:
    """With workers, the parent is the process systemd listens to (NotifyAccess=main): each
    worker writes one byte on a pipe when its listeners accept and when it has reloaded on
    SIGHUP; the parent sends READY=1 once every worker accepts, and after a SIGHUP once every
    worker reloaded (or RELOAD_REPORT_SECONDS passed)."""

    def __init__(self, notifier: Notifier | None, workers: int, status: str) -> None:
        self.notifier = notifier
        self.workers = workers
        self.status = status
        self.read_fd, self._write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        self._started = 0
        self._ready = False
        self._reloads_due = 0
        self._reload_deadline = 0.0

    def close(self) -> None:
        for fd in (self.read_fd, self._write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)

    # In a worker.
    def from_worker(self, event: str) -> None:
        byte = {READY: b"r", RELOADED: b"h"}.get(event)
        if byte is not None:
            with contextlib.suppress(OSError):  # the parent is gone: nothing to tell
                os.write(self._write_fd, byte)

    # In the parent.
    def reloading(self, workers: int) -> None:
        if self.notifier is not None:
            self.notifier.reloading()
        self._reloads_due = workers
        self._reload_deadline = time.monotonic() + RELOAD_REPORT_SECONDS
        if workers == 0:
            self._reloaded()

    def stopping(self) -> None:
        if self.notifier is not None:
            self.notifier.stopping()

    def wait(self, timeout: float) -> None:
        """Read what the workers said, waiting up to `timeout` seconds for it."""
        with contextlib.suppress(InterruptedError):  # a signal: the caller's loop goes on
            readable, _, _ = select.select([self.read_fd], [], [], timeout)
            if readable:
                with contextlib.suppress(BlockingIOError):
                    for byte in os.read(self.read_fd, 4096):
                        self._heard(byte)
        if self._reloads_due and time.monotonic() > self._reload_deadline:
            self._reloaded(f"{self._reloads_due} of the workers did not say they reloaded")

    def _heard(self, byte: int) -> None:
        if byte == ord("r"):
            self._started += 1
            if not self._ready and self._started >= self.workers:
                self._ready = True
                if self.notifier is not None:
                    self.notifier.ready(self.status)
        elif byte == ord("h") and self._reloads_due:
            self._reloads_due -= 1
            if not self._reloads_due:
                self._reloaded()

    def _reloaded(self, problem: str = "") -> None:
        self._reloads_due = 0
        if self.notifier is not None:
            done = problem or f"reloaded by {self.workers} workers"
            # The policy summary is the start's: the workers do not tell the parent theirs.
            self.notifier.ready(f"{done}; {self.status}")


@contextlib.contextmanager
def _forwarded_signals(
    workers: dict[int, float],
    listeners: list[tuple[Address, socket.socket]],
    reports: _WorkerReports,
) -> Iterator[list[bool]]:
    stopping = [False]

    def forward(signum: int, _frame: object) -> None:
        if not stopping[0]:
            reports.stopping()
        stopping[0] = True
        # The workers close their copies as they stop accepting; the parent's copy must go too,
        # or the kernel keeps queueing connections that nobody will answer.
        for _, sock in listeners:
            sock.close()
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def reload(signum: int, _frame: object) -> None:
        reports.reloading(len(workers))
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, reload)
    try:
        yield stopping
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _supervise(
    config: ServeConfig,
    listeners: list[tuple[Address, socket.socket]],
    loaded: Loaded,
    reports: _WorkerReports,
) -> None:
    workers: dict[int, float] = {}  # pid -> start time
    try:
        _supervise_workers(config, listeners, loaded, reports, workers)
    finally:
        reports.close()


def _supervise_workers(
    config: ServeConfig,
    listeners: list[tuple[Address, socket.socket]],
    loaded: Loaded,
    reports: _WorkerReports,
    workers: dict[int, float],
) -> None:
    with _forwarded_signals(workers, listeners, reports) as stopping:
        for _ in range(config.workers):
            pid = _spawn(config, listeners, loaded, reports)
            workers[pid] = time.monotonic()
        while workers:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                reports.wait(0.1)  # in place of a sleep: the workers' reports wake it
                continue
            started = workers.pop(pid, None)
            if started is None or stopping[0]:
                continue
            print(
                f"dockgate: worker {pid} exited ({_wait_description(status)}); restarting",
                file=sys.stderr,
                flush=True,
            )
            if time.monotonic() - started < WORKER_RESTART_DELAY_SECONDS:
                time.sleep(WORKER_RESTART_DELAY_SECONDS)
            if not stopping[0]:
                workers[_spawn(config, listeners, loaded, reports)] = time.monotonic()


def _wait_description(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"status {os.waitstatus_to_exitcode(status)}"
