"""startup/systemd.py on its own: reading LISTEN_* as sd_listen_fds(3) does, checking each inherited
socket, the --listen rule, the exposure rule for inherited unix sockets, sd_notify datagrams,
and the unit files in deploy/systemd (systemd-analyze verify when it is installed).

No daemon here: tests/deploy/test_systemd_activation.py runs the gateway as systemd would start it.
"""

from __future__ import annotations

import configparser
import os
import pathlib
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

from dockgate import server
from dockgate.addresses import Address, parse_address
from dockgate.config import ServeConfig
from dockgate.policy.tecnativa import policy_from_environment
from dockgate.server import StartupError, check_exposure
from dockgate.startup.systemd import (
    ActivationError,
    Inherited,
    Notifier,
    _take,
    check_listen_option,
    inherited_sockets,
)
from support.paths import REPO
from support.sdnotify import NotifyListener

UNITS = REPO / "deploy" / "systemd"

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def tmp_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="dg-sd-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def take(sock: socket.socket, name: str = "") -> Inherited:
    """_take on a copy of the socket's fd (it owns the fd it is given)."""
    return _take(os.dup(sock.fileno()), name)


# ----- LISTEN_* ---------------------------------------------------------------------------------


def test_no_variables_no_sockets() -> None:
    assert inherited_sockets({}) == []


def test_variables_for_another_process_are_ignored_and_removed() -> None:
    """LISTEN_PID names another process (variables inherited from a socket-activated parent):
    nothing is taken, and the variables are removed so no child of ours reads them either, as
    sd_listen_fds(unset_environment=1)."""
    env = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "x", "A": "b"}
    assert inherited_sockets(env) == []
    assert env == {"A": "b"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LISTEN_PID": "me", "LISTEN_FDS": "1"}, "LISTEN_PID='me' is not a process id"),
        ({"LISTEN_FDS": "two"}, "LISTEN_FDS='two' is not a number"),
        ({"LISTEN_FDS": "2", "LISTEN_FDNAMES": "a"}, "names 1 descriptors, LISTEN_FDS=2"),
    ],
)
def test_malformed_variables_are_an_error(env: dict[str, str], message: str) -> None:
    env = {"LISTEN_PID": str(os.getpid()), **env}
    with pytest.raises(ActivationError, match=message):
        inherited_sockets(env)
    assert not any(k.startswith("LISTEN_") for k in env)


def test_zero_descriptors_is_no_activation() -> None:
    assert inherited_sockets({"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "0"}) == []


# ----- one inherited socket ---------------------------------------------------------------------


def test_listening_tcp_socket_is_taken_with_its_address() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        one = take(s, "api")
        try:
            assert one.address == Address("tcp", host="127.0.0.1", port=s.getsockname()[1])
            assert one.name == "api"
            assert not one.open_to_all
            # Non-blocking for the event loop, close-on-exec as sd_listen_fds leaves it.
            assert not one.sock.getblocking()
            assert not os.get_inheritable(one.fd)
            assert one.describe().endswith(f"(from systemd: fd {one.fd}, name 'api')")
        finally:
            one.sock.close()


def test_ipv6_socket_address() -> None:
    try:
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with s:
        s.listen()
        one = take(s)
        try:
            assert one.address.host == "::1"
            assert one.address.is_loopback()
            assert str(one.address) == f"tcp://[::1]:{s.getsockname()[1]}"
        finally:
            one.sock.close()


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        (socket.SOCK_DGRAM, "datagram socket: dockgate needs stream sockets"),
        (socket.SOCK_SEQPACKET, "seqpacket socket"),
    ],
)
def test_non_stream_socket_is_refused(kind: int, message: str, tmp_dir: str) -> None:
    family = socket.AF_UNIX if kind == socket.SOCK_SEQPACKET else socket.AF_INET
    with socket.socket(family, kind) as s:
        s.bind(os.path.join(tmp_dir, "s") if family == socket.AF_UNIX else ("127.0.0.1", 0))
        with pytest.raises(ActivationError, match=message):
            take(s)


def test_socket_that_does_not_listen_is_refused() -> None:
    """Accept=yes passes a connected socket: refused, naming Accept=no."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with (
            socket.create_connection(server.getsockname()) as client,
            pytest.raises(ActivationError, match=r"not a listening socket.*Accept=no"),
        ):
            take(client)


def test_descriptor_that_is_not_a_socket_is_refused() -> None:
    read, write = os.pipe()
    os.close(write)
    with pytest.raises(ActivationError, match="is not a socket"):
        _take(read, "")
    os.close(read)


def test_unix_socket_mode_and_group_are_read_not_changed(tmp_dir: str) -> None:
    path = os.path.join(tmp_dir, "g.sock")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(path)
        os.chmod(path, 0o660)
        s.listen()
        one = take(s)
        try:
            assert one.address == Address("unix", path=path)
            assert one.detail.startswith("mode 660, group ")
            assert not one.open_to_all
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        finally:
            one.sock.close()


@pytest.mark.parametrize("mode", [0o666, 0o662])
def test_unix_socket_others_may_write_is_open_to_all(tmp_dir: str, mode: int) -> None:
    """systemd's default SocketMode= is 0666: every local user may connect."""
    path = os.path.join(tmp_dir, "o.sock")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(path)
        os.chmod(path, mode)
        s.listen()
        one = take(s)
        one.sock.close()
    assert one.open_to_all


def test_abstract_unix_socket_is_open_to_all() -> None:
    """An abstract socket (ListenStream=@name) has no file and so no permission check."""
    with socket.socket(socket.AF_UNIX) as s:
        s.bind("\0dockgate-unit-test")
        s.listen()
        one = take(s)
        one.sock.close()
    assert one.address == Address("unix", path="@dockgate-unit-test")
    assert one.open_to_all


# ----- --listen with inherited sockets ---------------------------------------------------------


def inherited_tcp(host: str, port: int) -> Inherited:
    return Inherited(3, "", Address("tcp", host=host, port=port), socket.socket())


def test_listen_naming_the_inherited_socket_is_accepted() -> None:
    one = inherited_tcp("127.0.0.1", 2375)
    try:
        check_listen_option([one], [parse_address("tcp://localhost:2375")])
        check_listen_option([one], [parse_address("tcp://127.0.0.1:2375")])
        check_listen_option([one], [])
    finally:
        one.sock.close()


@pytest.mark.parametrize("other", ["tcp://127.0.0.1:2376", "tcp://0.0.0.0:2375", "unix:///x"])
def test_listen_naming_another_address_is_refused(other: str) -> None:
    one = inherited_tcp("127.0.0.1", 2375)
    try:
        with pytest.raises(ActivationError, match=r"--listen .*ListenStream=.*DOCKGATE_LISTEN"):
            check_listen_option([one], [parse_address(other)])
    finally:
        one.sock.close()


# ----- the exposure rule ------------------------------------------------------------------------

# The environment policy: the drop-in rule's own case, which sockets from systemd never use.
ENVIRONMENT = policy_from_environment({})


def test_inherited_unix_socket_open_to_all_needs_authentication(tmp_dir: str) -> None:
    """New with socket activation: a unix socket of mode 666 (systemd's default) is refused
    without authentication, naming SocketMode=0660; the old code treated every unix listener
    as local-only."""
    address = Address("unix", path=os.path.join(tmp_dir, "d.sock"))
    one = Inherited(3, "", address, socket.socket(), open_to_all=True)
    try:
        config = ServeConfig(listen=[address])
        with pytest.raises(StartupError, match=r"SocketMode=0660 and SocketGroup=docker"):
            check_exposure(config, ENVIRONMENT, [one])
        # the same address not marked open (mode 660) starts, as does an authenticated one
        check_exposure(config, ENVIRONMENT, [Inherited(3, "", address, one.sock)])
        check_exposure(ServeConfig(listen=[address], tokens="/nonexistent"), ENVIRONMENT, [one])
    finally:
        one.sock.close()


def test_inherited_non_loopback_tcp_socket_message_names_the_socket_unit() -> None:
    one = inherited_tcp("0.0.0.0", 2375)
    try:
        with pytest.raises(StartupError) as caught:
            check_exposure(ServeConfig(listen=[one.address]), ENVIRONMENT, [one])
    finally:
        one.sock.close()
    message = str(caught.value)
    assert "tcp://0.0.0.0:2375" in message
    assert "ListenStream=127.0.0.1:2375" in message
    assert "--insecure" in message
    assert "DOCKGATE_INSECURE=1" in message


# ----- sd_notify --------------------------------------------------------------------------------


@pytest.mark.parametrize("abstract", [False, True])
def test_notifier_sends_states_as_systemd_reads_them(tmp_dir: str, abstract: bool) -> None:
    listener = NotifyListener(tmp_dir, abstract=abstract)
    try:
        env = {"NOTIFY_SOCKET": listener.target}
        notifier = Notifier.from_environ(env)
        assert notifier is not None
        assert env == {}  # workers and anything they run never see it
        assert notifier.ready("policy x")
        assert listener.receive(2) == {"READY": "1", "STATUS": "policy x"}
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert notifier.reloading()
        message = listener.receive(2)
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert message is not None
        assert message["RELOADING"] == "1"
        assert before <= int(message["MONOTONIC_USEC"]) <= after
        assert notifier.stopping()
        assert listener.receive(2) == {"STOPPING": "1", "STATUS": "stopping"}
        assert notifier.status("one\nline")
        assert listener.receive(2) == {"STATUS": "one line"}  # a newline would start a field
        notifier.close()
    finally:
        listener.close()


def test_notifier_errors_are_said_once_and_never_raise(
    tmp_dir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    notifier = Notifier(os.path.join(tmp_dir, "nobody-listens.sock"))
    try:
        assert not notifier.ready()
        assert not notifier.stopping()
    finally:
        notifier.close()
    err = capsys.readouterr().err
    assert err.count("cannot notify systemd") == 1


def test_notify_socket_of_unknown_kind_is_ignored_with_a_warning(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert Notifier.from_environ({"NOTIFY_SOCKET": "vsock:2:1234"}) is None
    assert "only a path or @abstract" in capsys.readouterr().err
    assert Notifier.from_environ({}) is None


# ----- the unit files ---------------------------------------------------------------------------


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name)
    return parser


def test_service_unit_key_settings() -> None:
    service = unit("dockgate.service")["Service"]
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert service["User"] == "dockgate"
    assert service["SupplementaryGroups"] == "docker"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["EnvironmentFile"] == "-/etc/dockgate/env"
    assert service["ExecStart"].split()[1] == "serve"
    assert "--listen" not in service["ExecStart"]  # the socket unit's sockets are the listeners
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
    }.items():
        assert service[key] == value, key
    assert set(service["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert unit("dockgate.service")["Unit"]["Requires"] == "dockgate.socket"


def test_socket_unit_listens_on_loopback_only() -> None:
    socket_unit = unit("dockgate.socket")["Socket"]
    address = parse_address("tcp://" + socket_unit["ListenStream"])
    assert address.is_loopback()
    assert socket_unit["Accept"] == "no"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not here")
def test_units_pass_systemd_analyze_verify(tmp_dir: str) -> None:
    """systemd's own parser: no unknown key, no bad value (it prints those and still exits 0,
    hence the check of its output). ExecStart's program must exist, so it is pointed at one
    that does."""
    for name in ("dockgate.socket", "dockgate.service"):
        text = (UNITS / name).read_text().replace("/opt/dockgate/bin/dockgate", "/bin/true")
        pathlib.Path(tmp_dir, name).write_text(text)
    proc = subprocess.run(
        ["systemd-analyze", "verify", "dockgate.socket", "dockgate.service"],
        cwd=tmp_dir,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr
    assert proc.stdout.strip() == "", proc.stdout


# ----- the parent's view of its workers ---------------------------------------------------------


def test_parent_tells_ready_once_every_worker_accepts_and_reloaded(
    tmp_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --workers 2: READY=1 only after both workers' bytes; after SIGHUP, READY=1 after
    both reloaded, or, when one never says so (it died), after RELOAD_REPORT_SECONDS with that
    said in STATUS=."""
    monkeypatch.setattr(server, "RELOAD_REPORT_SECONDS", 0.3)
    listener = NotifyListener(tmp_dir)
    notifier = Notifier(listener.target)
    reports = server._WorkerReports(notifier, 2, "policy p")
    try:
        reports.from_worker(server.READY)
        reports.wait(0.05)
        assert listener.receive(0.2) is None
        reports.from_worker(server.STOPPING)  # not the parent's business: nothing written
        reports.from_worker(server.READY)
        reports.wait(0.05)
        assert listener.receive(1) == {"READY": "1", "STATUS": "policy p"}
        reports.from_worker(server.READY)  # a restarted worker: no second READY=1
        reports.wait(0.05)
        assert listener.receive(0.2) is None

        reports.reloading(2)
        assert (listener.receive(1) or {}).get("RELOADING") == "1"
        reports.from_worker(server.RELOADED)
        reports.wait(0.05)
        assert listener.receive(0.2) is None
        reports.from_worker(server.RELOADED)
        reports.wait(0.05)
        assert listener.receive(1) == {"READY": "1", "STATUS": "reloaded by 2 workers; policy p"}

        reports.reloading(2)
        listener.receive(1)
        reports.from_worker(server.RELOADED)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and (message := listener.receive(0.05)) is None:
            reports.wait(0.05)
        assert message == {
            "READY": "1",
            "STATUS": "1 of the workers did not say they reloaded; policy p",
        }
    finally:
        reports.close()
        notifier.close()
        listener.close()
