"""Body guardrail cost: microseconds to read and judge one `docker run` create body.

The body is what the docker CLI sends for `docker run -d --name web -e ... -v data:/data -p 80
--label ... --memory 256m --cpus 0.5 image cmd` (API 1.41), checked against a CI-runner-style
policy that has every guardrail set (images, labels, host paths, limits, capabilities, sysctls).
Also the audit trail's reading of the same body. Prints microseconds per request; the target of
the issue is under 100. Run: `python3 bench/body_cost.py [--rounds N]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from dockgate.body.guardrails import check_request
from dockgate.observe.audit import body_details
from dockgate.policy.loader import parse_policy_text

POLICY = """
policies:
  ci:
    rules: [{allow: {sections: [containers]}}]
    guardrails:
      capabilities: [NET_BIND_SERVICE]
      host_paths: [{path: /srv/ci-cache, read_only: true}]
      sysctls: ["net.ipv4.ip_unprivileged_port_start"]
      runtimes: [runc, ""]
      images: ["registry.example.com/*", "docker.io/library/*"]
      required_labels: {team: "*"}
      max_memory: 1g
      max_cpus: 2
      require_no_new_privileges: true
"""

HOST_CONFIG = {
    "Binds": ["data:/data", "/srv/ci-cache:/cache:ro"],
    "ContainerIDFile": "",
    "LogConfig": {"Type": "", "Config": {}},
    "NetworkMode": "default",
    "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": ""}]},
    "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
    "AutoRemove": False,
    "VolumeDriver": "",
    "VolumesFrom": None,
    "CapAdd": ["NET_BIND_SERVICE"],
    "CapDrop": None,
    "CgroupnsMode": "",
    "Dns": [],
    "DnsOptions": [],
    "DnsSearch": [],
    "ExtraHosts": None,
    "GroupAdd": None,
    "IpcMode": "",
    "Cgroup": "",
    "Links": None,
    "OomScoreAdj": 0,
    "PidMode": "",
    "Privileged": False,
    "PublishAllPorts": False,
    "ReadonlyRootfs": False,
    "SecurityOpt": ["no-new-privileges"],
    "UTSMode": "",
    "UsernsMode": "",
    "ShmSize": 0,
    "Sysctls": {"net.ipv4.ip_unprivileged_port_start": "0"},
    "ConsoleSize": [0, 0],
    "Isolation": "",
    "CpuShares": 0,
    "Memory": 268435456,
    "NanoCpus": 500000000,
    "CgroupParent": "",
    "BlkioWeight": 0,
    "CpuPeriod": 0,
    "CpuQuota": 0,
    "CpusetCpus": "",
    "Devices": [],
    "DeviceCgroupRules": None,
    "DeviceRequests": None,
    "MemoryReservation": 0,
    "MemorySwap": 0,
    "OomKillDisable": False,
    "PidsLimit": None,
    "Ulimits": None,
    "MaskedPaths": None,
    "ReadonlyPaths": None,
}
BODY = json.dumps(
    {
        "Hostname": "",
        "Domainname": "",
        "User": "",
        "AttachStdin": False,
        "AttachStdout": False,
        "AttachStderr": False,
        "ExposedPorts": {"80/tcp": {}},
        "Tty": False,
        "OpenStdin": False,
        "StdinOnce": False,
        "Env": ["MODE=production", "WORKERS=4", "LOG_LEVEL=info"],
        "Cmd": ["nginx", "-g", "daemon off;"],
        "Image": "nginx:1.27",
        "Volumes": {},
        "WorkingDir": "",
        "Entrypoint": None,
        "OnBuild": None,
        "Labels": {"team": "web", "com.example.commit": "3f1c9e2"},
        "HostConfig": HOST_CONFIG,
        "NetworkingConfig": {"EndpointsConfig": {}},
    }
).encode()


def per_call_us(function: object, rounds: int) -> list[float]:
    call = function  # a zero-argument callable
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(rounds):
            call()  # type: ignore[operator]
        samples.append((time.perf_counter() - start) / rounds * 1e6)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5000)
    args = parser.parse_args()
    guardrails = parse_policy_text(POLICY, "bench").policies["ci"].guardrails
    assert guardrails is not None
    check_request(guardrails, "ContainerCreate", "name=web", BODY)  # allowed, or this raises
    checks = per_call_us(
        lambda: check_request(guardrails, "ContainerCreate", "name=web", BODY), args.rounds
    )
    audit = per_call_us(lambda: body_details("ContainerCreate", BODY, False), args.rounds)
    print(f"create body: {len(BODY)} bytes, {args.rounds} rounds x 5")
    print(
        f"guardrails check: median {statistics.median(checks):.1f} us, "
        f"best {min(checks):.1f} us (target < 100 us)"
    )
    print(f"audit details:    median {statistics.median(audit):.1f} us, best {min(audit):.1f} us")


if __name__ == "__main__":
    main()
