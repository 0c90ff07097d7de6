"""The Docker SDK for Python, pointed at the gateway (base_url=tcp://...), against a real daemon.

Each test's docstring states the claim it checks. What a test creates is registered with the
``cleanup`` fixture, which removes it straight through the daemon afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import socket
import tarfile
import threading
import time
from collections.abc import Callable
from typing import Any

import docker
import docker.errors
import pytest
from docker.utils.socket import frames_iter

from support.clients import Cleanup
from support.daemon import PrivateDaemon, free_tcp_port
from support.streams import wait_for

pytestmark = pytest.mark.daemon

Unique = Callable[[str], str]


def _run_detached(sdk: Any, cleanup: Cleanup, image: str, name: str, command: list[str]) -> Any:
    """Start a detached container named ``name`` running ``command``; returns it."""
    container = sdk.containers.run(image, command, name=name, detach=True)
    cleanup.container(name)
    return container


def _sleeper(sdk: Any, cleanup: Cleanup, image: str, name: str) -> Any:
    return _run_detached(sdk, cleanup, image, name, ["sleep", "300"])


def _tar_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _close_stream(stream: Any) -> None:
    """Cancel an SDK stream and release its socket.

    CancellableStream.close() shuts the socket down and closes it while the response's file
    object still refers to it, so the descriptor stays open until garbage collection (a
    ResourceWarning); closing the response as well releases it at once.
    """
    with contextlib.suppress(OSError):  # already shut down (e.g. the server ended it first)
        stream.close()
    stream._response.close()


def test_ping_version_info(sdk: Any) -> None:
    """ping, version and info go through the gateway and describe the daemon."""
    assert sdk.ping() is True
    version = sdk.version()
    assert re.fullmatch(r"1\.\d+", version["ApiVersion"])
    info = sdk.info()
    assert "Containers" in info
    assert info["Swarm"]["LocalNodeState"] in ("inactive", "active")


def test_containers_run_list_inspect(
    sdk: Any, cleanup: Cleanup, busybox_image: str, unique: Unique
) -> None:
    """containers.run(detach=True) starts a container that list() and get() report running."""
    name = unique("sdk-run")
    container = _sleeper(sdk, cleanup, busybox_image, name)
    container.reload()
    assert container.status == "running"
    assert container.name == name
    assert container.attrs["Config"]["Cmd"] == ["sleep", "300"]
    assert name in [c.name for c in sdk.containers.list()]
    assert sdk.containers.get(name).id == container.id
    filtered = sdk.containers.list(all=True, filters={"name": name})
    assert [c.id for c in filtered] == [container.id]


def test_containers_run_foreground_output_and_error(sdk: Any, busybox_image: str) -> None:
    """containers.run() without detach returns stdout; a non-zero exit raises ContainerError."""
    out = sdk.containers.run(busybox_image, ["sh", "-c", "echo sdk-out"], remove=True)
    assert out == b"sdk-out\n"
    with pytest.raises(docker.errors.ContainerError) as info:
        sdk.containers.run(busybox_image, ["sh", "-c", "echo boom >&2; exit 6"], remove=True)
    assert info.value.exit_status == 6
    assert b"boom" in info.value.stderr


def test_logs_and_wait(sdk: Any, cleanup: Cleanup, busybox_image: str, unique: Unique) -> None:
    """logs() returns stdout and stderr separately on request, and wait() gives the exit code."""
    name = unique("sdk-logs")
    script = "echo out-a; echo err-a >&2; exit 2"
    container = _run_detached(sdk, cleanup, busybox_image, name, ["sh", "-c", script])
    assert container.wait(timeout=30)["StatusCode"] == 2
    assert container.logs(stdout=True, stderr=False) == b"out-a\n"
    assert container.logs(stdout=False, stderr=True) == b"err-a\n"


def test_logs_stream_follow(sdk: Any, cleanup: Cleanup, busybox_image: str, unique: Unique) -> None:
    """logs(stream=True, follow=True) yields lines while the container runs, then ends."""
    name = unique("sdk-logsf")
    script = "for i in $(seq 1 15); do echo line-$i; sleep 0.05; done"
    container = _run_detached(sdk, cleanup, busybox_image, name, ["sh", "-c", script])
    received = b"".join(container.logs(stream=True, follow=True))
    assert received.decode().splitlines() == [f"line-{i}" for i in range(1, 16)]


def test_logs_stream_live(sdk: Any, cleanup: Cleanup, busybox_image: str, unique: Unique) -> None:
    """A followed log stream delivers new output while an endless container still prints."""
    name = unique("sdk-logslive")
    script = "i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.1; done"
    container = _run_detached(sdk, cleanup, busybox_image, name, ["sh", "-c", script])
    stream = container.logs(stream=True, follow=True, tail=0)
    seen: list[str] = []
    buf = b""
    deadline = time.monotonic() + 20
    try:
        for chunk in stream:
            buf += chunk
            *complete, buf = buf.split(b"\n")
            seen += [line.decode() for line in complete]
            if len(seen) >= 10 or time.monotonic() > deadline:
                break
    finally:
        _close_stream(stream)
    assert len(seen) >= 10, seen
    numbers = [int(line.removeprefix("tick-")) for line in seen]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))


def test_exec_run(sdk: Any, cleanup: Cleanup, busybox_image: str, unique: Unique) -> None:
    """exec_run returns the exit code with stdout/stderr demultiplexed, and can stream output."""
    name = unique("sdk-exec")
    container = _sleeper(sdk, cleanup, busybox_image, name)
    result = container.exec_run(["sh", "-c", "echo e-out; echo e-err >&2; exit 4"], demux=True)
    assert result.exit_code == 4
    assert result.output == (b"e-out\n", b"e-err\n")
    plain = container.exec_run(["sh", "-c", "id -u"])
    assert (plain.exit_code, plain.output) == (0, b"0\n")
    # Streamed exec over the raw hijacked socket (exec_run(stream=True) never closes it).
    exec_id = sdk.api.exec_create(
        container.id, ["sh", "-c", "for i in 1 2 3; do echo s-$i; sleep 0.05; done"]
    )["Id"]
    sock = sdk.api.exec_start(exec_id, socket=True)
    raw: socket.socket = sock._sock
    try:
        streamed = b"".join(data for _stream, data in frames_iter(sock, tty=False))
    finally:
        sock.close()
        raw.close()
    assert streamed == b"s-1\ns-2\ns-3\n"
    assert sdk.api.exec_inspect(exec_id)["ExitCode"] == 0
    tty = container.exec_run(["sh", "-c", "tty >/dev/null && echo has-tty"], tty=True)
    assert tty.output.strip() == b"has-tty"


def test_put_and_get_archive(
    sdk: Any, cleanup: Cleanup, busybox_image: str, unique: Unique
) -> None:
    """put_archive uploads a tar into a container; get_archive streams the same bytes back."""
    name = unique("sdk-archive")
    container = _sleeper(sdk, cleanup, busybox_image, name)
    payload = os.urandom(2 * 1024 * 1024 + 3)
    assert container.put_archive("/tmp", _tar_of({"blob.bin": payload, "note.txt": b"hi\n"}))
    check = container.exec_run(["sha256sum", "/tmp/blob.bin"])
    assert check.output.split()[0].decode() == hashlib.sha256(payload).hexdigest()
    chunks, stat = container.get_archive("/tmp/blob.bin")
    assert stat["name"] == "blob.bin"
    assert stat["size"] == len(payload)
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
        member = tar.extractfile("blob.bin")
        assert member is not None
        assert member.read() == payload


def test_images_build(sdk: Any, cleanup: Cleanup, busybox_image: str, unique: Unique) -> None:
    """images.build builds from an in-memory context (COPY + RUN) and the image runs."""
    tag = f"{unique('sdk-build')}:v1"
    cleanup.image(tag)
    dockerfile = (
        f"FROM {busybox_image}\n"
        "COPY msg.txt /msg.txt\n"
        "RUN cat /msg.txt > /out.txt && echo from-run >> /out.txt\n"
        'CMD ["cat", "/out.txt"]\n'
    ).encode()
    context = _tar_of({"Dockerfile": dockerfile, "msg.txt": b"from-copy\n"})
    image, logs = sdk.images.build(
        fileobj=io.BytesIO(context), custom_context=True, tag=tag, rm=True
    )
    log_text = "".join(entry.get("stream", "") for entry in logs)
    assert "Successfully built" in log_text, log_text
    assert tag in image.tags
    assert sdk.containers.run(tag, remove=True) == b"from-copy\nfrom-run\n"


def test_events_since_until(sdk: Any, cleanup: Cleanup, busybox_image: str, unique: Unique) -> None:
    """events(since, until) replays a container's create/start/die and the stream then ends."""
    name = unique("sdk-events")
    t0 = time.time() - 1
    sdk.containers.run(busybox_image, ["true"], name=name)
    cleanup.container(name)
    t1 = time.time() + 1
    events = list(sdk.events(since=t0, until=t1, decode=True, filters={"container": name}))
    actions = [e["Action"] for e in events if e.get("Type") == "container"]
    for expected in ("create", "start", "die"):
        assert expected in actions, actions
    assert actions.index("create") < actions.index("start") < actions.index("die")


def test_events_stream_live(sdk: Any, cleanup: Cleanup, busybox_image: str, unique: Unique) -> None:
    """An open events() stream delivers a container's start and die as they happen."""
    name = unique("sdk-events-live")
    stream = sdk.events(since=time.time() - 1, decode=True, filters={"container": name})
    got: list[str] = []
    done = threading.Event()

    def consume() -> None:
        try:
            for event in stream:
                got.append(event["Action"])
                if event["Action"] == "die":
                    done.set()
                    return
        except Exception:  # closed from the main thread
            return

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    try:
        container = _sleeper(sdk, cleanup, busybox_image, name)
        wait_for(lambda: "start" in got, timeout=15, what="the start event")
        container.kill()
        assert done.wait(15), got
    finally:
        _close_stream(stream)
        thread.join(5)


def test_stats_once(sdk: Any, cleanup: Cleanup, busybox_image: str, unique: Unique) -> None:
    """stats(stream=False) returns one sample with memory and pid figures."""
    name = unique("sdk-stats")
    container = _sleeper(sdk, cleanup, busybox_image, name)
    stats = container.stats(stream=False)
    assert stats["name"] == "/" + name
    assert "memory_stats" in stats
    assert stats["pids_stats"].get("current", 0) >= 1


def test_export(sdk: Any, cleanup: Cleanup, busybox_image: str, unique: Unique) -> None:
    """Container.export() streams a filesystem tar containing bin/busybox."""
    name = unique("sdk-export")
    container = sdk.containers.create(busybox_image, ["true"], name=name)
    cleanup.container(name)
    data = b"".join(container.export(chunk_size=64 * 1024))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.getmember("bin/busybox")
        assert member.isfile()
        assert member.size > 100_000


def test_save_and_load(
    sdk: Any, daemon: PrivateDaemon, cleanup: Cleanup, busybox_image: str, unique: Unique
) -> None:
    """Image.save() then images.load() restores a removed tag to the same image id."""
    tag = f"{unique('sdk-save')}:v1"
    daemon.docker("tag", busybox_image, tag)
    cleanup.image(tag)
    image = sdk.images.get(tag)
    # By name, so the archive carries our tag (Image.save(named=True) would pick tags[0]).
    saved = b"".join(sdk.api.get_image(tag))
    sdk.images.remove(tag)
    with pytest.raises(docker.errors.ImageNotFound):
        sdk.images.get(tag)
    loaded = sdk.images.load(saved)
    assert [img.id for img in loaded] == [image.id]
    assert sdk.images.get(tag).id == image.id


def test_networks(sdk: Any, cleanup: Cleanup, unique: Unique) -> None:
    """networks.create/get/list/remove manage a labelled user network."""
    name = unique("sdk-net")
    cleanup.network(name)
    network = sdk.networks.create(name, labels={"dgtest": "sdk"})
    assert sdk.networks.get(network.id).name == name
    assert network.id in [n.id for n in sdk.networks.list(filters={"label": "dgtest=sdk"})]
    network.remove()
    with pytest.raises(docker.errors.NotFound):
        sdk.networks.get(network.id)


def test_volumes(sdk: Any, cleanup: Cleanup, busybox_image: str, unique: Unique) -> None:
    """volumes.create/get/remove manage a volume that a container can write to."""
    name = unique("sdk-vol")
    cleanup.volume(name)
    volume = sdk.volumes.create(name, labels={"dgtest": "sdk"})
    assert sdk.volumes.get(name).attrs["Labels"] == {"dgtest": "sdk"}
    out = sdk.containers.run(
        busybox_image,
        ["sh", "-c", "echo persisted > /v/f && cat /v/f"],
        volumes={name: {"bind": "/v", "mode": "rw"}},
        remove=True,
    )
    assert out == b"persisted\n"
    volume.remove()
    with pytest.raises(docker.errors.NotFound):
        sdk.volumes.get(name)


def test_attach_socket_stdin_roundtrip(
    sdk: Any, cleanup: Cleanup, busybox_image: str, unique: Unique
) -> None:
    """A hijacked attach socket carries stdin in and output out; a half-close ends the input."""
    name = unique("sdk-attach")
    script = 'while read -r line; do echo "got:$line"; done; echo stdin-closed'
    config = sdk.api.create_container_config(busybox_image, ["sh", "-c", script], stdin_open=True)
    config["StdinOnce"] = True  # as `docker run -i` does: stdin closes when the attach half-closes
    cid = sdk.api.create_container_from_config(config, name)["Id"]
    container = sdk.containers.get(cid)
    cleanup.container(name)
    sock = sdk.api.attach_socket(
        container.id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
    )
    raw: socket.socket = sock._sock
    try:
        container.start()
        raw.sendall(b"one\ntwo\n")
        raw.shutdown(socket.SHUT_WR)
        raw.settimeout(20)
        output = b"".join(data for _stream, data in frames_iter(sock, tty=False))
    finally:
        sock.close()
        raw.close()
    assert output == b"got:one\ngot:two\nstdin-closed\n"
    assert container.wait(timeout=20)["StatusCode"] == 0


def test_swarm_service_roundtrip(
    sdk: Any, daemon: PrivateDaemon, busybox_image: str, unique: Unique
) -> None:
    """swarm.init, services.create, a running task's logs, services remove and swarm.leave."""
    name = unique("sdk-svc")
    try:
        sdk.swarm.init(advertise_addr="127.0.0.1", listen_addr=f"127.0.0.1:{free_tcp_port()}")
        service = sdk.services.create(
            busybox_image, ["sh", "-c", "echo sdk-svc-hello; sleep 300"], name=name
        )
        assert name in [s.name for s in sdk.services.list()]

        def running() -> bool:
            service.reload()
            return any(t["Status"]["State"] == "running" for t in service.tasks())

        wait_for(running, timeout=60, interval=0.25, what="the service task to run")

        def logged() -> bool:
            return b"sdk-svc-hello" in b"".join(service.logs(stdout=True, stderr=True))

        wait_for(logged, timeout=30, interval=0.25, what="the service log line")
        assert service.remove() is True
        assert name not in [s.name for s in sdk.services.list()]
        assert sdk.swarm.leave(force=True) is True
    finally:
        daemon.docker("service", "rm", name, check=False)
        daemon.docker("swarm", "leave", "--force", check=False, timeout=60)
