"""Where the policy comes from: a policy file, or else Tecnativa-style environment variables."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from dockgate.auth.sourceaddr import SourceRules
from dockgate.policy.loader import load_policy_file
from dockgate.policy.rules import PolicySet
from dockgate.policy.tecnativa import compatibility_variables_set, policy_from_environment


def load_policies(
    policy_file: str | None,
    env: Mapping[str, str],
    *,
    origins: Iterable[str] = (),
    hosts: Iterable[str] = (),
    sources: SourceRules | None = None,
) -> tuple[PolicySet, list[str]]:
    """The policies in force, and warnings for the operator (ignored variables)."""
    warnings: list[str] = []
    if policy_file is not None:
        policies = load_policy_file(policy_file)
        ignored = compatibility_variables_set(env)
        if ignored:
            warnings.append(
                f"--policy {policy_file} is in force; these variables are ignored: "
                + ", ".join(ignored)
            )
    else:
        policies = policy_from_environment(env)
    extra_origins = frozenset(o.lower().rstrip("/") for o in origins)
    extra_hosts = frozenset(h.lower().rstrip(".") for h in hosts)
    if extra_origins or extra_hosts or sources:
        policies = dataclasses.replace(
            policies,
            origins=policies.origins | extra_origins,
            hosts=policies.hosts | extra_hosts,
            sources=policies.sources | sources if sources else policies.sources,
        )
    return policies, warnings
