"""The unix-socket peer as the caller, pure parts: cgroup files read as the runtimes write them,
the peer's process read from a fake /proc (PID reuse forced), bindings by container, service,
uid and gid, and admission of a caller its peer names."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from dockgate.addresses import parse_address
from dockgate.auth.authenticator import Authenticator
from dockgate.auth.cgroup import container_ids
from dockgate.auth.identity import (
    ANONYMOUS,
    BASIC,
    CONTAINER,
    PROCESS,
    ContainerFacts,
    Identity,
)
from dockgate.auth.peerlookup import (
    ContainerDirectory,
    container_facts,
    identify_peer,
    settled,
)
from dockgate.auth.peerproc import PeerCred, PeerProcess, PeerProcesses, Unidentified, start_time
from dockgate.auth.sourceaddr import UNIX_SOURCE
from dockgate.body.guardrails import BodyRefused, Guardrails, check_request, explain_request
from dockgate.ownership.owners import identity_key, parse_identity
from dockgate.policy.admission import ConnectionFacts
from dockgate.policy.limits import caller_key
from dockgate.policy.loader import PolicyError, parse_policy_text
from dockgate.refusal import Refusal
from support.admission import admissions, facts, head

ID = "9f1c2b3a4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8"
OTHER = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

# ----- cgroup files -------------------------------------------------------------------------

# What the runtimes write, one sample per layout (see auth/cgroup.py).
CGROUP_SAMPLES = {
    "dockerd cgroupfs, cgroup v1 (hybrid)": (
        f"12:pids:/docker/{ID}\n11:memory:/docker/{ID}\n1:name=systemd:/docker/{ID}\n0::/\n"
    ),
    "dockerd systemd driver, cgroup v2": f"0::/system.slice/docker-{ID}.scope\n",
    "kubernetes containerd, systemd driver": (
        "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1b2c3d4e_5f6a_"
        f"7b8c_9d0e_1f2a3b4c5d6e.slice/cri-containerd-{ID}.scope\n"
    ),
    "kubernetes cgroupfs, cgroup v1": (
        f"11:memory:/kubepods/besteffort/pod1b2c3d4e-5f6a-7b8c-9d0e-1f2a3b4c5d6e/{ID}\n"
    ),
    "containerd systemd, unit and ID after colons": (
        "0::/system.slice/containerd.service/kubepods-besteffort-pod1b2c3d4e_5f6a.slice:"
        f"cri-containerd:{ID}\n"
    ),
    "CRI-O": f"0::/kubepods.slice/kubepods-burstable.slice/crio-{ID}.scope\n",
    "podman": f"0::/machine.slice/libpod-{ID}.scope/container\n",
    "read from another cgroup namespace": f"0::/../../system.slice/docker-{ID}.scope\n",
}


@pytest.mark.parametrize("text", CGROUP_SAMPLES.values(), ids=list(CGROUP_SAMPLES))
def test_each_runtime_layout_names_the_container(text: str) -> None:
    assert container_ids(text) == (ID,)


@pytest.mark.parametrize(
    "text",
    [
        "0::/user.slice/user-1000.slice/session-3.scope\n",
        "0::/init.scope\n",
        "0::/\n",
        # this machine's own sandbox: a 32-hex ID is no container's
        "4:memory:/process_api/af66c34c10f22aa13ad8ebed3446a0ba\n0::/\n",
        f"0::/system.slice/docker-{ID[:63]}.scope\n",  # one digit short
        f"0::/system.slice/x{ID}y\n",  # inside a longer word
        "garbage without colons\n",
        "",
    ],
)
def test_a_host_process_is_in_no_container(text: str) -> None:
    assert container_ids(text) == ()


def test_nested_containers_are_named_outermost_first() -> None:
    # docker in docker: the daemon dockgate fronts knows the outer one; a sub-cgroup named
    # after another container cannot put that one first
    assert container_ids(f"0::/docker/{ID}/docker/{OTHER}\n") == (ID, OTHER)
    assert container_ids(f"1:name=systemd:/docker/{ID}\n0::/docker/{ID}/{OTHER}\n") == (ID, OTHER)


# ----- /proc/PID/stat -----------------------------------------------------------------------


def _stat(pid: int, started: int, comm: str = "curl") -> str:
    fields = ["S", "1", str(pid), str(pid), "0", "-1", "4194560"] + ["0"] * 12
    fields += [str(started), "12345", "678"]  # field 22 (starttime), then vsize, rss
    return f"{pid} ({comm}) " + " ".join(fields) + "\n"


def test_start_time_is_field_22_whatever_the_command_name() -> None:
    assert start_time(_stat(42, 987654)) == 987654
    # a command name with spaces and parentheses (the process chooses it: prctl PR_SET_NAME)
    assert start_time(_stat(42, 987654, comm="a) (b c) 1 2 3")) == 987654
    with open("/proc/self/stat") as f:
        assert start_time(f.read()) > 0


# ----- the peer's process, from a fake /proc ------------------------------------------------


class FakeProc:
    """A /proc whose files are a dict; `then` replaces files after a given read (the PID
    reused while dockgate reads)."""

    def __init__(self, files: dict[str, str]) -> None:
        self.files = files
        self.reads: list[str] = []
        self.after: dict[int, dict[str, str]] = {}

    def __call__(self, path: Path) -> str:
        name = str(path)
        self.reads.append(name)
        change = self.after.get(len(self.reads))
        found = self.files.get(name)
        if change is not None:
            self.files.update(change)
        if found is None:
            raise FileNotFoundError(name)
        return found


ACCEPTED = 100_000  # boot ticks when the connection was accepted


def _proc(pid: int, started: int, cgroup: str) -> FakeProc:
    return FakeProc({f"/proc/{pid}/stat": _stat(pid, started), f"/proc/{pid}/cgroup": cgroup})


def _processes(fake: FakeProc) -> PeerProcesses:
    return PeerProcesses(Path("/proc"), read_text=fake)


def test_a_process_in_a_container_is_read_with_its_containers() -> None:
    fake = _proc(4242, 99_000, f"0::/docker/{ID}\n")
    read = _processes(fake).read(PeerCred(4242, 0, 0), ACCEPTED)
    assert read == PeerProcess(PeerCred(4242, 0, 0), 99_000, (ID,), (("0:", f"/docker/{ID}"),))
    # stat, cgroup, stat again
    assert fake.reads == ["/proc/4242/stat", "/proc/4242/cgroup", "/proc/4242/stat"]


def test_the_same_process_is_read_again_from_its_stat_alone() -> None:
    fake = _proc(4242, 99_000, f"0::/docker/{ID}\n")
    processes = _processes(fake)
    processes.read(PeerCred(4242, 0, 0), ACCEPTED)
    fake.reads.clear()
    assert processes.read(PeerCred(4242, 0, 0), ACCEPTED + 5).containers == (ID,)
    assert fake.reads == ["/proc/4242/stat"]


def test_a_pid_reused_by_a_process_started_after_the_accept_is_refused() -> None:
    # the peer exited; the PID now belongs to a process (in another container) that started
    # after the connection was accepted: not the peer, neither its container nor its uid
    fake = _proc(4242, ACCEPTED + 1, f"0::/docker/{OTHER}\n")
    read = _processes(fake).read(PeerCred(4242, 1000, 1000), ACCEPTED)
    assert isinstance(read, Unidentified)
    assert "pid 4242 belongs to a process started after the connection" in read.reason
    assert "/proc/4242/cgroup" not in fake.reads


def test_a_pid_reused_while_its_cgroup_is_read_is_refused() -> None:
    # the start time read after the cgroup file is another process's
    fake = _proc(4242, 99_000, f"0::/docker/{ID}\n")
    fake.after[2] = {
        "/proc/4242/stat": _stat(4242, 99_500),
        "/proc/4242/cgroup": f"0::/docker/{OTHER}\n",
    }
    processes = _processes(fake)
    read = processes.read(PeerCred(4242, 0, 0), ACCEPTED)
    assert isinstance(read, Unidentified) and "reused" in read.reason
    # and nothing was remembered of it
    fake.files["/proc/4242/stat"] = _stat(4242, 99_000)
    fake.reads.clear()
    processes.read(PeerCred(4242, 0, 0), ACCEPTED)
    assert "/proc/4242/cgroup" in fake.reads


def test_a_peer_that_exited_is_refused() -> None:
    read = _processes(FakeProc({})).read(PeerCred(4242, 1000, 1000), ACCEPTED)
    assert isinstance(read, Unidentified)
    assert read.reason == "the calling process (pid 4242) exited before dockgate could identify it"


def test_a_peer_whose_pidfd_says_it_exited_is_refused() -> None:
    class Dead:
        def alive(self) -> bool:
            return False

    # /proc still shows a process of that PID, started before the accept: the pidfd tells
    # that it is not the peer (which is gone)
    fake = _proc(4242, 99_000, "0::/user.slice\n")
    read = _processes(fake).read(PeerCred(4242, 1000, 1000), ACCEPTED, Dead())  # type: ignore[arg-type]
    assert isinstance(read, Unidentified) and "exited" in read.reason


def test_a_peer_in_an_unseen_pid_namespace_is_refused_with_the_fix() -> None:
    read = _processes(FakeProc({})).read(PeerCred(0, 0, 0), ACCEPTED)
    assert isinstance(read, Unidentified)
    assert "PID namespace" in read.reason and "--pid host" in read.reason


# ----- naming the caller ----------------------------------------------------------------------


def _inspect(name: str = "/web", labels: dict[str, str] | None = None) -> dict[str, object]:
    return {
        "Id": ID,
        "Name": name,
        "Config": {"Image": "traefik:v3.1", "Labels": labels or {}},
        "State": {"StartedAt": "2026-12-07T15:00:00.1Z"},
    }


def test_container_facts_from_an_inspect_answer() -> None:
    labels = {"dockgate.role": "proxy", "com.docker.swarm.service.name": "edge_traefik"}
    found = container_facts(_inspect(labels=labels))
    assert found == ContainerFacts(
        id=ID,
        name="web",
        labels=(("com.docker.swarm.service.name", "edge_traefik"), ("dockgate.role", "proxy")),
        image="traefik:v3.1",
        service="",  # (a label any create can write: the swarm is asked, auth/peerlookup.py)
        started_at="2026-12-07T15:00:00.1Z",
    )
    assert container_facts({"Id": ID}) is None
    assert container_facts([]) is None


def test_a_host_process_is_named_by_uid_and_gid_without_asking_the_daemon() -> None:
    directory = ContainerDirectory(lambda: 0.0)
    caller = settled(PeerProcess(PeerCred(77, 1000, 100), 5, ()), directory)
    assert caller == Identity("uid:1000", PROCESS, "gid:100")
    assert caller is settled(PeerProcess(PeerCred(78, 1000, 100), 6, ()), directory)


def test_an_unidentified_peer_is_a_403_with_its_reason() -> None:
    caller = settled(Unidentified("it left"), ContainerDirectory(lambda: 0.0))
    assert caller == Refusal(403, "dockgate: it left", "peer", "peer unidentified")


def test_a_daemon_that_cannot_be_asked_is_a_502(tmp_path: Path) -> None:
    directory = ContainerDirectory(lambda: 0.0)
    read = PeerProcess(PeerCred(77, 0, 0), 5, (ID,))
    assert settled(read, directory) is None  # the daemon must be asked
    address = parse_address(f"unix://{tmp_path}/no-daemon.sock")
    caller = asyncio.run(identify_peer(address, read, directory))
    assert isinstance(caller, Refusal) and caller.status == 502
    assert caller.message.startswith("dockgate: cannot identify the calling container: ")


# ----- bindings -------------------------------------------------------------------------------

PEER_POLICY = """\
bindings:
  - policy: admin
    users: [alice]
  - policy: proxy
    container: {labels: {dockgate.role: proxy}}
  - policy: tools
    container: {labels: {team: "*", tier: "back*"}, images: ["registry.local/tools:*"]}
  - policy: named
    container: {names: [ci-*]}
  - policy: swarm
    service: edge_traefik
  - policy: local
    uids: [1000]
  - policy: wheel
    gids: [10]
  - policy: anyone
    anonymous: true
  - policy: admin
    authenticated: true
  - policy: admin
    groups: [ops]
groups:
  ops: [web, uid:0]
policies:
  admin: {rules: [{allow: {sections: ["*"]}}]}
  proxy: {rules: [{allow: {operations: [ContainerList]}}]}
  tools: {rules: [{allow: {operations: [ImageList]}}]}
  named: {rules: [{allow: {operations: [NetworkList]}}]}
  swarm: {rules: [{allow: {operations: [ServiceList]}}]}
  local: {rules: [{allow: {operations: [VolumeList]}}]}
  wheel: {rules: [{allow: {operations: [SystemInfo]}}]}
  anyone: {rules: [{allow: {operations: [SystemPing]}}]}
"""


def _container(
    name: str, labels: dict[str, str], image: str = "busybox", service: str = ""
) -> Identity:
    facts = ContainerFacts(ID, name, tuple(sorted(labels.items())), image, service)
    return Identity(name, CONTAINER, ID, container=facts)


def _bound(identity: Identity) -> str | None:
    policies = parse_policy_text(PEER_POLICY, "peer.yaml")
    binding = policies.binding_for(identity, UNIX_SOURCE)
    return None if binding is None else binding.policy


def test_containers_bind_by_labels_names_images_and_service() -> None:
    assert _bound(_container("web", {"dockgate.role": "proxy"})) == "proxy"
    assert _bound(_container("web", {"dockgate.role": "proxy-2"})) is None  # equal, not prefix
    tools = {"team": "a", "tier": "backend"}
    assert _bound(_container("x", tools, "registry.local/tools:1.2")) == "tools"
    assert _bound(_container("x", tools, "registry.local/other:1.2")) is None  # every condition
    assert (
        _bound(_container("x", {"team": "", "tier": "back"}, "registry.local/tools:1")) == "tools"
    )
    assert _bound(_container("x", {"tier": "back"}, "registry.local/tools:1")) is None  # no team
    assert _bound(_container("ci-runner-3", {})) == "named"
    assert _bound(_container("runner-ci-3", {})) is None
    assert _bound(_container("edge_traefik.1.xyz", {}, service="edge_traefik")) == "swarm"


def test_a_container_never_takes_a_binding_of_users_groups_or_everyone_authenticated() -> None:
    # `web` is a member of group ops and `authenticated: true` binds admin: neither is a
    # container's, nor is the anonymous binding
    assert _bound(_container("web", {})) is None
    assert _bound(_container("alice", {})) is None


def test_host_processes_bind_by_uid_or_gid_and_only_so() -> None:
    assert _bound(Identity("uid:1000", PROCESS, "gid:1000")) == "local"
    assert _bound(Identity("uid:1001", PROCESS, "gid:10")) == "wheel"
    assert _bound(Identity("uid:0", PROCESS, "gid:0")) is None  # group ops lists `uid:0`: no
    # and users and anonymous callers take none of the peer bindings
    assert _bound(Identity("alice", BASIC)) == "admin"
    assert _bound(Identity(ANONYMOUS, ANONYMOUS)) == "anyone"


@pytest.mark.parametrize(
    ("binding", "problem"),
    [
        ("{policy: p, container: {}}", "'container:' needs labels, names or images"),
        ("{policy: p, container: {labels: {'a*': x}}}", "label key 'a*'"),
        ("{policy: p, container: {names: [x]}, anonymous: true}", "not with anonymous"),
        ("{policy: p, uids: [-1]}", "uids: -1 is not an id"),
        ("{policy: p, uids: ['1000']}", "uids"),
        ("{policy: p, service: 'a b'}", "service name 'a b'"),
        ("{policy: p, container: {labels: {a: b}, ports: [1]}}", "unknown key 'ports'"),
    ],
)
def test_peer_keys_are_checked_at_load(binding: str, problem: str) -> None:
    text = (
        f"bindings:\n  - {binding}\npolicies:\n  p: {{rules: [{{allow: {{sections: ['*']}}}}]}}\n"
    )
    with pytest.raises(PolicyError) as caught:
        parse_policy_text(text, "p.yaml")
    assert problem in str(caught.value)
    assert caught.value.line == 2


def test_peer_identities_own_as_container_and_process() -> None:
    assert identity_key(_container("web", {})) == "container:web"
    assert identity_key(Identity("uid:1000", PROCESS, "gid:1")) == "process:uid:1000"
    assert parse_identity("container:web") == "container:web"


# ----- admission ------------------------------------------------------------------------------


def _unix(caller: Identity | Refusal | None) -> ConnectionFacts:
    conn = ConnectionFacts(UNIX_SOURCE, UNIX_SOURCE)
    conn.caller = caller
    return conn


def _admit(
    caller: Identity | Refusal | None,
    target: str,
    conn: ConnectionFacts | None = None,
    authorization: str | None = None,
):  # type: ignore[no-untyped-def]
    gate = admissions(Authenticator(), PEER_POLICY)
    return gate.admit(head(target=target, authorization=authorization), conn or _unix(caller), 0.0)


def test_admission_names_a_unix_caller_by_its_peer() -> None:
    proxy = _container("traefik", {"dockgate.role": "proxy"})
    admitted = _admit(proxy, "/v1.41/containers/json")
    assert admitted.verdict.allowed and admitted.identity is proxy
    assert admitted.policy is not None and admitted.policy.name == "proxy"
    refused = _admit(proxy, "/v1.41/images/json")
    assert refused.verdict.status == 403  # its policy's own refusal


def test_an_unbound_container_is_refused_not_anonymous() -> None:
    admitted = _admit(_container("stray", {}), "/_ping")
    assert admitted.verdict.status == 403
    assert admitted.verdict.message == "dockgate: no policy is bound to container stray"


def test_a_host_process_without_a_uid_binding_stays_anonymous() -> None:
    local = _admit(Identity("uid:1000", PROCESS, "gid:1000"), "/v1.41/volumes")
    assert local.verdict.allowed and local.policy is not None and local.policy.name == "local"
    other = _admit(Identity("uid:4000", PROCESS, "gid:4000"), "/_ping")
    assert other.verdict.allowed and other.policy is not None and other.policy.name == "anyone"
    assert other.identity.method not in (CONTAINER, PROCESS)  # as before: no credentials


def test_an_unidentified_peer_is_refused_with_its_reason() -> None:
    refusal = Refusal(
        403, "dockgate: the calling process (pid 9) exited", "peer", "peer unidentified"
    )
    admitted = _admit(refusal, "/_ping")
    assert (admitted.verdict.status, admitted.verdict.message) == (403, refusal.message)
    assert admitted.verdict.label == "deny:-:peer"


def test_tcp_callers_are_never_named_by_a_peer() -> None:
    conn = facts()
    conn.caller = _container("traefik", {"dockgate.role": "proxy"})  # (never set for TCP)
    admitted = _admit(None, "/_ping", conn)
    assert admitted.policy is not None and admitted.policy.name == "anyone"


def test_limits_count_each_container_and_host_uid_apart() -> None:
    # (not every root container as the one source "unix uid 0")
    web = _container("web", {})
    assert caller_key(web, "unix:uid:0") == f"container:{ID}"
    assert caller_key(Identity("uid:1000", PROCESS, "gid:1000"), "unix:uid:1000") == (
        "process:uid:1000"
    )


def test_policies_refuse_creates_labelled_as_a_bound_container_unless_they_allow_it() -> None:
    policies = parse_policy_text(
        """\
bindings:
  - {policy: proxy, container: {labels: {dockgate.role: proxy, tier: "front*"}}}
  - {policy: named, container: {names: [web]}}
  - {policy: deployer, users: [ops]}
  - {policy: ci, users: [ci]}
policies:
  proxy: {rules: [{allow: {sections: ["*"]}}]}
  named: {rules: [{allow: {sections: ["*"]}}]}
  deployer: {rules: [{allow: {sections: ["*"]}}], guardrails: {peer_labels: true}}
  ci: {rules: [{allow: {sections: ["*"]}}]}
""",
        "p.yaml",
    )
    ci = policies.policies["ci"].guardrails
    deployer = policies.policies["deployer"].guardrails
    assert ci is not None and deployer is not None
    assert [b for b, _ in ci.peer_labels] == ["binding 1 (policy proxy)"]  # labels only
    assert deployer.peer_labels == ()

    def problem(guardrails: Guardrails, labels: dict[str, str]) -> str | None:
        body = json.dumps({"Image": "busybox", "Labels": labels}).encode()
        try:
            check_request(guardrails, "ContainerCreate", "", body)
        except BodyRefused as refused:
            return refused.reason
        return None

    assert problem(ci, {"dockgate.role": "proxy", "tier": "frontend"}) == (
        "labels dockgate.role=proxy, tier=frontend would make the container a caller bound by "
        "binding 1 (policy proxy) on the unix socket (allowed with the guardrail peer_labels: true)"
    )
    assert problem(ci, {"dockgate.role": "proxy"}) is None  # not every condition
    assert problem(ci, {"dockgate.role": "proxy", "tier": "back"}) is None
    assert problem(deployer, {"dockgate.role": "proxy", "tier": "frontend"}) is None
    service = json.dumps(
        {
            "Name": "x",
            "TaskTemplate": {
                "ContainerSpec": {
                    "Image": "busybox",
                    "Labels": {"dockgate.role": "proxy", "tier": "front"},
                }
            },
        }
    ).encode()
    with pytest.raises(BodyRefused) as refused:
        check_request(ci, "ServiceCreate", "", service)
    assert "would make the container a caller bound by binding 1" in refused.value.reason
    # `dockgate check --body` lists the check where it applies (and only there)
    body = json.dumps({"Image": "b", "Labels": {"dockgate.role": "proxy", "tier": "f"}}).encode()
    assert ("peer_labels", problem(ci, {"dockgate.role": "proxy", "tier": "f"})) in (
        explain_request(ci, "ContainerCreate", "", body)
    )
    assert "peer_labels" not in dict(explain_request(Guardrails(), "ContainerCreate", "", body))
