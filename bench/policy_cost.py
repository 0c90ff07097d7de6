"""Policy decision cost: identification plus rules, per request, with a 100-rule policy.

Measures `Gatekeeper.check` (target parsing, route identification, browser checks, policy) in
process, uncached and cached, over a corpus of realistic requests, and prints microseconds per
request. Run: `python3 bench/policy_cost.py` (it is also called by `bench/run.py`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from dockgate.api.routes import OPERATIONS, SECTIONS
from dockgate.policy.gatekeeper import Gatekeeper
from dockgate.policy.loader import load_policy_file

CORPUS = [
    ("GET", "/_ping"),
    ("HEAD", "/_ping"),
    ("GET", "/v1.41/version"),
    ("GET", "/v1.41/containers/json?all=1&filters=%7B%22label%22%3A%5B%22a%3Db%22%5D%7D"),
    (
        "GET",
        "/v1.41/containers/4f1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0a1b/json",
    ),
    ("POST", "/v1.41/containers/create?name=web-1"),
    ("POST", "/v1.41/containers/web-1/start"),
    ("GET", "/v1.41/containers/web-1/logs?follow=1&stdout=1&stderr=1&tail=100"),
    ("POST", "/v1.41/containers/web-1/exec"),
    ("POST", "/v1.41/exec/0123456789abcdef/start"),
    ("GET", "/v1.41/images/registry.example.com:5000/team/app:1.2/json"),
    ("DELETE", "/v1.41/images/registry.example.com:5000/team/app:1.2?force=1"),
    ("GET", "/v1.41/services?status=true"),
    ("GET", "/v1.41/tasks?filters=%7B%22service%22%3A%5B%22web%22%5D%7D"),
    ("GET", "/v1.41/events?since=1700000000"),
    ("POST", "/v1.41/build?t=app%3Alatest&networkmode=default"),
    ("GET", "/v1.41/networks/bridge"),
    ("POST", "/v1.41/volumes/create"),
    ("GET", "/v1.41/secrets"),
    ("GET", "/v1.41/nonexistent/route"),
]


def write_policy(directory: Path, rules: int) -> Path:
    """A policy of `rules` rules: denies and allows by section, operation, method and path."""
    operations = sorted(OPERATIONS)
    sections = [s for s in SECTIONS if s != "debug"]
    lines = ["policies:", "  bench:", "    rules:"]
    for i in range(rules - 2):
        kind = i % 4
        if kind == 0:
            op = operations[i % len(operations)]
            lines.append(f"      - deny: {{operations: [{op}], paths: ['/nowhere/{i}/{{x}}']}}")
        elif kind == 1:
            lines.append(
                f"      - allow: {{sections: [{sections[i % len(sections)]}], methods: [GET]}}"
            )
        elif kind == 2:
            lines.append(
                f"      - allow: {{operations: [{operations[(i * 7) % len(operations)]}]}}"
            )
        else:
            lines.append(f"      - deny: {{methods: [DELETE], paths: ['/images/{{name*}}/x{i}']}}")
    lines.append("      - allow: {sections: [containers, images, exec, services, tasks]}")
    lines.append("      - allow: {sections: ['*'], paths: ['/{x*}']}")
    path = directory / "bench-policy.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def measure(rules: int = 100, seconds: float = 1.0) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        policies = load_policy_file(write_policy(Path(tmp), rules))
    assert sum(len(p.rules) for p in policies.policies.values()) == rules
    results: dict[str, float] = {}
    for label in ("uncached", "cached"):
        gatekeeper = Gatekeeper(policies)
        host = b"127.0.0.1:2375"
        count = 0
        start = time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            for method, target in CORPUS:
                if label == "uncached":
                    # A fresh Gatekeeper per round: no verdict cache, and the policy's
                    # per-operation cache only from the previous rounds, as in a long run.
                    gatekeeper.check(method, target, host, None)
                else:
                    gatekeeper.check_cached(method, target, host, None, False)
            count += len(CORPUS)
        results[label] = (time.perf_counter() - start) / count * 1e6
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rules", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    figures = measure(args.rules, args.seconds)
    print(f"policy decision cost, {args.rules}-rule policy, {len(CORPUS)} request shapes:")
    print(f"  identification + rules, no verdict cache: {figures['uncached']:.2f} us/request")
    print(f"  with the verdict cache (repeated requests): {figures['cached']:.2f} us/request")


if __name__ == "__main__":
    main()
