"""Policy files (YAML or TOML): parsed, validated and compiled in one place.

Every problem is reported as `PolicyError` naming the file, the line and what is wrong; the
gateway never starts on a half-understood policy. Unknown keys, unknown sections or operations,
duplicate keys and bad patterns are all errors, never ignored.
"""

from __future__ import annotations

import dataclasses
import math
import posixpath
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    model_validator,
)

from dockgate.addresses import shown_address
from dockgate.api.routes import OPERATIONS, SECTIONS
from dockgate.auth.sourceaddr import AddressListError, SourceRules, parse_address_list
from dockgate.body import hostports, subnets
from dockgate.body.guardrails import NAMESPACES, Guardrails, HostPathRule, normalize_capability
from dockgate.body.redact import Redaction
from dockgate.body.volumeopts import NETWORK_TYPES
from dockgate.files import read_config_text
from dockgate.ownership.owners import OWNER_NAME, parse_identity
from dockgate.policy.defaultspec import DefaultsSpec, compile_defaults
from dockgate.policy.limits import Limits
from dockgate.policy.presetfiles import preset_names, read_preset
from dockgate.policy.rules import (
    ALLOW,
    DENY,
    Binding,
    ContainerMatch,
    Matcher,
    PatternError,
    Policy,
    PolicySet,
    Rule,
    compile_path_pattern,
)
from dockgate.policy.scopes import ObjectScope, compile_pattern, scopable

Location = tuple[str | int, ...]
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# The most keys, items and scalars a YAML policy file may expand to. Aliases repeat what they
# name without copying it in the text, so a file of a few hundred bytes can stand for millions
# of values (a "billion laughs"), and reading it would stop every worker's event loop (a reload
# runs in the sweep). Real policies hold hundreds; this is far above any of them.
MAX_POLICY_VALUES = 20_000


_E = TypeVar("_E")
_T = TypeVar("_T")


class PolicyError(ValueError):
    """A policy file that cannot be used; `str()` is `FILE:LINE: problem`."""

    def __init__(self, source: str, line: int | None, problem: str) -> None:
        self.source = source
        self.line = line
        self.problem = problem
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {problem}")


# ----- the file's schema --------------------------------------------------------------------


ModeName = Literal["enforce", "warn", "audit"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ObjectsSpec(_Strict):
    """`objects:` of an allow rule (policy/scopes.py): the existing objects it covers."""

    labels: dict[str, str] = Field(default_factory=dict)
    names: list[str] | None = None
    stacks: list[str] | None = None

    @model_validator(mode="after")
    def _meaningful(self) -> ObjectsSpec:
        if not self.labels and self.names is None and self.stacks is None:
            raise ValueError("'objects:' needs at least one of labels, names, stacks")
        for field_name in ("names", "stacks"):
            value = getattr(self, field_name)
            if value is not None and not value:
                raise ValueError(f"'{field_name}' is empty; leave it out to match any")
        if any(not key for key in self.labels):
            raise ValueError("a label key is empty")
        return self


class MatchSpec(_Strict):
    sections: list[str] | None = None
    operations: list[str] | None = None
    methods: list[str] | None = None
    paths: list[str] | None = None
    unknown: StrictBool = False
    objects: ObjectsSpec | None = None

    @model_validator(mode="after")
    def _meaningful(self) -> MatchSpec:
        given = [
            self.sections is not None,
            self.operations is not None,
            self.methods is not None,
            self.paths is not None,
            self.unknown,
        ]
        if not any(given):
            raise ValueError(
                "a rule needs at least one of sections, operations, methods, paths, unknown"
            )
        if self.unknown and (self.sections is not None or self.operations is not None):
            raise ValueError(
                "'unknown: true' matches unidentified requests: no sections/operations"
            )
        for field_name in ("sections", "operations", "methods", "paths"):
            value = getattr(self, field_name)
            if value is not None and not value:
                raise ValueError(f"'{field_name}' is empty; leave it out to match any")
        if self.objects is not None and self.sections is None and self.operations is None:
            raise ValueError("'objects:' narrows a rule's sections or operations: give them")
        return self


class RuleSpec(_Strict):
    allow: MatchSpec | None = None
    deny: MatchSpec | None = None

    @model_validator(mode="after")
    def _one_effect(self) -> RuleSpec:
        if (self.allow is None) == (self.deny is None):
            raise ValueError("a rule is exactly one of 'allow:' or 'deny:'")
        if self.deny is not None and self.deny.objects is not None:
            raise ValueError(
                "'objects:' is for allow rules only: keep objects out of the allow rules' "
                "scopes instead (a deny looks nothing up)"
            )
        return self


class HostPathSpec(_Strict):
    path: str
    read_only: StrictBool = False


class ExecSpec(_Strict):
    root: StrictBool = True
    privileged: StrictBool = False


class GuardrailsSpec(_Strict):
    privileged: StrictBool = False
    capabilities: list[str] = Field(default_factory=list)
    devices: StrictBool = False
    host_paths: list[HostPathSpec] = Field(default_factory=list)
    volumes_from: StrictBool = False
    namespaces: list[str] = Field(default_factory=list)
    security_overrides: StrictBool = False
    require_no_new_privileges: StrictBool = False
    sysctls: list[str] = Field(default_factory=list)
    runtimes: list[str] | None = None
    images: list[str] | None = None
    required_labels: dict[str, str] = Field(default_factory=dict)
    max_memory: str | StrictInt | None = None
    max_cpus: float | None = None
    volume_drivers: list[str] = Field(default_factory=list)
    volume_types: dict[str, list[str]] = Field(default_factory=dict)
    exec: ExecSpec = Field(default_factory=ExecSpec)
    fetch_urls: StrictBool | None = None
    image_import_urls: StrictBool | None = None  # the older name of fetch_urls
    network_drivers: list[str] = Field(default_factory=list)
    network_subnets: list[str] = Field(default_factory=list)
    host_ports: list[StrictInt | str] = Field(default_factory=list)
    plugin_privileges: StrictBool = False
    swarm: StrictBool = False
    buildkit: StrictBool = False
    # May create containers that container bindings would name (_guard_peer_labels)
    peer_labels: StrictBool = False


class RedactSpec(_Strict):
    env: StrictBool = False
    mounts: StrictBool = False
    labels: StrictBool = False


class LimitsSpec(_Strict):
    """`limits:` of a policy (policy/limits.py): per caller of the policy."""

    rate: StrictFloat | None = None  # requests (tokens) per second (an integer is a number too)
    burst: StrictInt | None = None  # default: twice the rate, rounded up
    concurrent: StrictInt | None = None
    streams: StrictInt | None = None
    costs: dict[str, StrictInt] = Field(default_factory=dict)


class PolicySpec(_Strict):
    read_only: StrictBool = False
    redact: RedactSpec = Field(default_factory=RedactSpec)
    ownership: StrictBool = False
    rules: list[RuleSpec] = Field(default_factory=list)
    # Absent: the safe defaults; false: no body checks at all (root for whoever may create).
    guardrails: GuardrailsSpec | StrictBool | None = None
    # A shipped preset taken whole, or a preset or policy this one builds on: both resolved
    # before compiling (_expand_presets below, docs/presets.md).
    preset: str | None = None
    extends: str | None = None
    mode: ModeName = "enforce"  # rollout mode (policy/modes.py)
    limits: LimitsSpec | None = None
    defaults: DefaultsSpec | None = None  # put into creates (policy/defaultspec.py)


class SourcesSpec(_Strict):
    allow: list[str] = Field(default_factory=list)
    deny: list[str] = Field(default_factory=list)


class ContainerBindingSpec(_Strict):
    """A binding's `container:` (docs/policy.md, "The calling container as the identity")."""

    labels: dict[str, str] = Field(default_factory=dict)
    names: list[str] = Field(default_factory=list)
    images: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _says_something(self) -> ContainerBindingSpec:
        if not (self.labels or self.names or self.images):
            raise ValueError(
                "'container:' needs labels, names or images (any container: labels {KEY: '*'})"
            )
        return self


class BindingSpec(_Strict):
    policy: str
    users: list[str] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)
    certificates: list[str] = Field(default_factory=list)
    tokens: list[str] = Field(default_factory=list)
    anonymous: StrictBool = False
    authenticated: StrictBool = False
    sources: SourcesSpec | None = None
    mode: ModeName | None = None  # the policy's rollout mode for these callers (modes.py)
    # The unix-socket peer (_compile_peer_keys)
    container: ContainerBindingSpec | None = None
    service: str | None = None
    services: list[str] = Field(default_factory=list)
    uids: list[StrictInt] = Field(default_factory=list)
    gids: list[StrictInt] = Field(default_factory=list)

    @model_validator(mode="after")
    def _names_someone(self) -> BindingSpec:
        if not (
            self.users
            or self.groups
            or self.certificates
            or self.tokens
            or self.anonymous
            or self.authenticated
            or self.container is not None
            or self.service is not None
            or self.services
            or self.uids
            or self.gids
        ):
            raise ValueError(
                "a binding names who it is for: users, groups, certificates, tokens, "
                "anonymous: true or authenticated: true (or, by the unix-socket peer: "
                "container, service, uids or gids)"
            )
        return self


class PolicyFileSpec(_Strict):
    version: Literal[1] = 1
    default: str | None = None
    origins: list[str] = Field(default_factory=list)
    hosts: list[str] = Field(default_factory=list)
    sources: SourcesSpec | None = None
    groups: dict[str, list[str]] = Field(default_factory=dict)
    bindings: list[BindingSpec] | None = None
    # Ownership: owner name -> the identities that count as that owner (ownership/owners.py).
    owners: dict[str, list[str]] = Field(default_factory=dict)
    policies: dict[str, PolicySpec]


# ----- reading with line numbers ---------------------------------------------------------------


def _yaml_with_lines(text: str, source: str) -> tuple[Any, dict[Location, int]]:
    """Parse YAML into plain data, recording the line of every key and item (1-based)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyError(source, line, f"invalid YAML: {problem}") from None
    except RecursionError:
        raise PolicyError(source, None, "the file is nested too deeply") from None
    lines: dict[Location, int] = {}
    constructor = yaml.SafeLoader("")
    budget = [MAX_POLICY_VALUES]  # values left to convert, aliases counted each time they are used

    def convert(n: yaml.Node, loc: Location) -> Any:
        budget[0] -= 1
        if budget[0] < 0:
            raise PolicyError(
                source,
                n.start_mark.line + 1,
                f"the file stands for more than {MAX_POLICY_VALUES} keys and values "
                "(YAML aliases repeat what they name)",
            )
        lines.setdefault(loc, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in n.value:
                key = key_node.value
                if not isinstance(key_node, yaml.ScalarNode):
                    raise PolicyError(source, key_node.start_mark.line + 1, "keys must be plain")
                if key in out:
                    raise PolicyError(
                        source, key_node.start_mark.line + 1, f"duplicate key {key!r}"
                    )
                lines[(*loc, key)] = key_node.start_mark.line + 1
                out[key] = convert(value_node, (*loc, key))
            return out
        if isinstance(n, yaml.SequenceNode):
            return [convert(item, (*loc, i)) for i, item in enumerate(n.value)]
        # Scalars: resolve with the safe constructor so `true`, `1` and strings keep their types.
        try:
            return constructor.construct_object(n, deep=True)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
            # An unknown tag (`!foo true`) or one that does not fit its value (`!!int "x"`):
            # a PolicyError like any other, never an exception that stops a reload loop.
            problem = getattr(exc, "problem", None) or str(exc)
            raise PolicyError(source, n.start_mark.line + 1, f"invalid value: {problem}") from None

    if node is None:
        raise PolicyError(source, 1, "the file is empty")
    try:
        return convert(node, ()), lines
    except RecursionError:
        raise PolicyError(source, None, "the file is nested too deeply") from None


def _toml_with_lines(text: str, source: str) -> tuple[Any, dict[Location, int]]:
    """Parse TOML; lines of keys are found by name, since tomllib keeps no positions."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        raise PolicyError(
            source, int(match.group(1)) if match else None, f"invalid TOML: {exc}"
        ) from None
    except RecursionError:
        raise PolicyError(source, None, "the file is nested too deeply") from None
    text_lines = text.splitlines()
    lines: dict[Location, int] = {}

    def find(key: str, start: int) -> int | None:
        pattern = re.compile(
            rf"^\s*(?:\[+\s*)?(?:[\w.\"-]*\.)?\"?{re.escape(key)}\"?\s*(?:=|\]|\.)"
        )
        for number in range(start, len(text_lines)):
            if pattern.search(text_lines[number]):
                return number + 1
        return None

    def find_table_header(start: int) -> int | None:
        """The next `[[array.of.tables]]` header line at or after `start`, skipping the keys
        of the table before it; None when the items are not written as such headers."""
        for number in range(start, len(text_lines)):
            stripped = text_lines[number].strip()
            if stripped.startswith("[["):
                return number + 1
            if stripped.startswith("["):
                return None
        return None

    def walk(value: Any, loc: Location, start: int) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                found = find(str(key), start)
                line = found if found is not None else start + 1
                lines[(*loc, key)] = line
                walk(item, (*loc, key), line - 1)
        elif isinstance(value, list):
            # Items (tables of an array such as [[policies.x.rules]]) follow one another: each
            # is searched for after the previous one, so a key repeated in every rule is found
            # in the right rule.
            position = start
            for i, item in enumerate(value):
                line = position + 1
                if isinstance(item, dict) and item:
                    found = find_table_header(position) or find(str(next(iter(item))), position)
                    if found is not None:
                        line = found
                lines[(*loc, i)] = line
                walk(item, (*loc, i), line - 1)
                position = line

    walk(data, (), 0)
    return data, lines


def _line_for(lines: Mapping[Location, int], loc: Location) -> int | None:
    for end in range(len(loc), -1, -1):
        line = lines.get(tuple(loc[:end]))
        if line is not None:
            return line
    return None


# ----- compiling --------------------------------------------------------------------------------


def load_policy_file(path: str | Path) -> PolicySet:
    source = str(path)
    text = read_config_text(path, lambda problem: PolicyError(source, None, problem))
    return parse_policy_text(text, source, toml=source.endswith(".toml"))


def parse_policy_text(text: str, source: str, *, toml: bool = False) -> PolicySet:
    data, lines = _toml_with_lines(text, source) if toml else _yaml_with_lines(text, source)
    if not isinstance(data, dict):
        raise PolicyError(source, 1, "the top level must be a mapping with a 'policies' key")
    try:
        spec = PolicyFileSpec.model_validate(data)
    except ValidationError as exc:
        # An unknown key explains a missing one (`polices:` for `policies:`): report it first.
        # A union (`guardrails: {...} | false`) reports each member: the mapping's own error is
        # the one that explains, and the member's name is not part of the location.
        errors = [e for e in exc.errors() if _UNION_BOOL not in e["loc"]] or exc.errors()
        errors = sorted(errors, key=lambda e: e["type"] != "extra_forbidden")
        first = errors[0]
        loc = tuple(p for p in first["loc"] if p not in _UNION_MEMBERS)
        where = ".".join(str(p) for p in loc) or "top level"
        if first["type"] == "extra_forbidden":
            message = f"unknown key {loc[-1]!r}"
        else:
            message = first["msg"].removeprefix("Value error, ")
        raise PolicyError(source, _line_for(lines, loc), f"{where}: {message}") from None
    spec, expanded_lines, bases = _expand_presets(spec, source, lines)
    policy_set = _compile(spec, source, expanded_lines)
    for name, basis in bases.items():
        policy_set.policies[name].basis = basis
    return policy_set


_UNION_BOOL = "bool"
_UNION_MEMBERS = frozenset({"GuardrailsSpec", _UNION_BOOL})


# ----- presets and extends (docs/presets.md) ------------------------------------------------------

# What a preset decides for a policy that takes it whole (`preset:`): such a policy may not give
# them (`extends:` is for changing a preset). Its other keys apply as written.
_PRESET_KEYS = ("rules", "read_only", "guardrails", "redact", "ownership")
# Keys merged key by key (the policy's own keys over the base's); every other key is replaced
# whole by the policy's own when it gives it, and rules are the policy's first, then the base's.
_MERGED_PER_KEY = frozenset({"guardrails", "redact"})
_REFERENCE_KEYS = frozenset({"preset", "extends"})
# Keys a policy never takes from what it builds on: its rollout mode is its own (a policy that
# extends one in warn mode is not switched on half-way by it; docs/presets.md).
_OWN_ONLY_KEYS = frozenset({"mode"})


def _merge_spec(own: PolicySpec, base: PolicySpec) -> PolicySpec:
    """`own` built on `base`: own rules first (numbered first, and first among the allows or
    the denies; a deny still wins over every allow, rules.py), then the base's; for every other
    key the one `own` gives, else the base's; `guardrails:` and `redact:` mappings merged key
    by key (a list is replaced, not extended; `guardrails: false` or `true` replaces the base's
    whole)."""
    values: dict[str, Any] = {"rules": [*own.rules, *base.rules]}
    for key in PolicySpec.model_fields:
        if key == "rules" or key in _REFERENCE_KEYS:
            continue
        own_value, base_value = getattr(own, key), getattr(base, key)
        if key in _OWN_ONLY_KEYS:
            if key in own.model_fields_set:
                values[key] = own_value
            continue
        if key in own.model_fields_set:
            if (
                key in _MERGED_PER_KEY
                and key in base.model_fields_set
                and isinstance(own_value, BaseModel)
                and isinstance(base_value, BaseModel)
            ):
                own_value = _merge_keys(own_value, base_value)
            values[key] = own_value
        elif key in base.model_fields_set:
            values[key] = base_value
    return PolicySpec.model_construct(_fields_set=set(values), **values)


def _merge_keys(own: BaseModel, base: BaseModel) -> BaseModel:
    """A mapping's keys: `own`'s where it gives them, else `base`'s."""
    values = {key: getattr(base, key) for key in base.model_fields_set}
    values.update({key: getattr(own, key) for key in own.model_fields_set})
    return type(own).model_construct(_fields_set=set(values), **values)


def load_preset(name: str) -> PolicySpec | None:
    """The shipped preset `name` as a policy's spec, or None when there is none. A preset that
    does not parse is a PolicyError naming the preset's file and line."""
    preset = read_preset(name)
    if preset is None:
        return None
    data, lines = _yaml_with_lines(preset.text, preset.source)
    try:
        spec = PolicySpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(p for p in first["loc"] if p not in _UNION_MEMBERS)
        where = ".".join(str(p) for p in loc) or "top level"
        problem = f"{where}: {first['msg'].removeprefix('Value error, ')}"
        raise PolicyError(preset.source, _line_for(lines, loc), problem) from None
    if spec.preset is not None or spec.extends is not None:
        raise PolicyError(preset.source, None, "a preset is written out whole: no preset/extends")
    return spec


def _expand_presets(
    spec: PolicyFileSpec, source: str, lines: Mapping[Location, int]
) -> tuple[PolicyFileSpec, Mapping[Location, int], dict[str, str]]:
    """Every policy with `preset:` or `extends:` replaced by what it stands for, and `lines`
    extended so that an inherited rule is explained by where it was written: the base policy's
    line in this file, or the `preset:`/`extends:` line for a preset's rule. The third value
    says, per such policy, what it was built on (`Policy.basis`)."""
    if all(p.preset is None and p.extends is None for p in spec.policies.values()):
        return spec, lines, {}  # the usual file: nothing to do, and nothing changes
    new_lines = dict(lines)
    resolved: dict[str, PolicySpec] = {}
    bases: dict[str, str] = {}

    def fail(loc: Location, problem: str) -> PolicyError:
        return PolicyError(source, _line_for(new_lines, loc), problem)

    def copy_lines(source_loc: Location, target_loc: Location) -> None:
        width = len(source_loc)
        for loc, line in list(new_lines.items()):
            if loc[:width] == source_loc:
                new_lines.setdefault((*target_loc, *loc[width:]), line)

    def point_at(here: Location, key: str, index: int) -> None:
        """A preset's rule `index` is explained by the line of this policy's `key`."""
        line = _line_for(new_lines, (*here, key))
        if line is not None:
            new_lines[(*here, "rules", index)] = line

    def preset_spec(name: str, loc: Location, key: str) -> PolicySpec:
        found = load_preset(name)
        if found is None and key == "extends" and loc[1] == name:
            raise fail(
                loc, f"extends {name!r}: a policy cannot extend itself, and no preset has that name"
            )
        if found is None:
            others = "no policy of this file and " if key == "extends" else ""
            raise fail(
                loc,
                f"{key} {name!r}: {others}no preset has that name "
                f"(presets: {', '.join(preset_names())}; `dockgate policy presets` lists them)",
            )
        return found

    def resolve(name: str, chain: tuple[str, ...]) -> PolicySpec:
        if name in resolved:
            return resolved[name]
        own = spec.policies[name]
        here: Location = ("policies", name)
        if own.preset is not None and own.extends is not None:
            raise fail(
                (*here, "extends"), "give 'preset:' (a preset whole) or 'extends:', not both"
            )
        rules_at = len(own.rules)  # where the inherited rules start
        if own.preset is not None:
            given = [key for key in _PRESET_KEYS if key in own.model_fields_set]
            if given:
                raise fail(
                    (*here, given[0]),
                    f"'preset: {own.preset}' takes the preset whole; to change its "
                    f"{given[0]}, write 'extends: {own.preset}' instead",
                )
            base = preset_spec(own.preset, (*here, "preset"), "preset")
            bases[name] = f"preset {own.preset}"
            for index in range(len(base.rules)):
                point_at(here, "preset", rules_at + index)
        elif own.extends is not None:
            target = own.extends
            if target in spec.policies and target != name:
                if target in chain:
                    cycle = " -> ".join((*chain[chain.index(target) :], name, target))
                    raise fail((*here, "extends"), f"'extends:' goes round in a circle: {cycle}")
                base = resolve(target, (*chain, name))
                bases[name] = ", ".join(b for b in (f"extends {target}", bases.get(target)) if b)
                for index in range(len(base.rules)):
                    copy_lines(
                        ("policies", target, "rules", index), (*here, "rules", rules_at + index)
                    )
                for key in _MERGED_PER_KEY:
                    copy_lines(("policies", target, key), (*here, key))
            else:
                base = preset_spec(target, (*here, "extends"), "extends")
                bases[name] = f"extends preset {target}"
                for index in range(len(base.rules)):
                    point_at(here, "extends", rules_at + index)
        else:
            resolved[name] = own
            return own
        resolved[name] = _merge_spec(own, base)
        return resolved[name]

    policies = {name: resolve(name, ()) for name in spec.policies}
    return spec.model_copy(update={"policies": policies}), new_lines, bases


def _compile(spec: PolicyFileSpec, source: str, lines: Mapping[Location, int]) -> PolicySet:
    def fail(loc: Location, problem: str) -> PolicyError:
        return PolicyError(source, _line_for(lines, loc), problem)

    if not spec.policies:
        raise fail(("policies",), "at least one policy is needed")
    policies: dict[str, Policy] = {}
    for name, policy_spec in spec.policies.items():
        if not _NAME.fullmatch(name):
            raise fail(("policies", name), f"policy name {name!r}: use letters, digits, . _ -")
        rules: list[Rule] = []
        for index, rule_spec in enumerate(policy_spec.rules):
            effect = ALLOW if rule_spec.allow is not None else DENY
            match_spec = rule_spec.allow or rule_spec.deny
            assert match_spec is not None
            loc: Location = ("policies", name, "rules", index, effect)
            rules.append(
                Rule(
                    number=index + 1,
                    effect=effect,
                    matcher=_compile_matcher(match_spec, loc, fail),
                    line=_line_for(lines, ("policies", name, "rules", index)),
                )
            )
        guardrails = _compile_guardrails(
            policy_spec.guardrails, ("policies", name, "guardrails"), fail
        )
        redact = policy_spec.redact
        policies[name] = Policy(
            name,
            policy_spec.read_only,
            tuple(rules),
            guardrails,
            Redaction(redact.env, redact.mounts, redact.labels),
            policy_spec.ownership,
            limits=_compile_limits(policy_spec.limits, ("policies", name, "limits"), fail),
            defaults=compile_defaults(
                policy_spec.defaults,
                ("policies", name, "defaults"),
                fail,
                guardrails,
                ownership=policy_spec.ownership,
                parse_size=parse_size,
            ),
        )

    _compile_modes(spec, policies)
    bindings = _compile_bindings(spec, policies, lines, fail)
    _guard_peer_labels(spec, policies, bindings)
    default = spec.default
    if bindings is not None:
        if default is not None:
            raise fail(
                ("default",),
                "with 'bindings:', each caller gets the policy of its binding; 'default:' "
                "would bind everyone (write a binding with 'authenticated: true' instead)",
            )
        default = ""  # nobody gets a policy by default: PolicySet.active denies
    elif default is None:
        if len(policies) != 1:
            raise fail(("policies",), "several policies: say which applies with 'default:'")
        default = next(iter(policies))
    elif default not in policies:
        raise fail(("default",), f"default policy {default!r} is not defined")
    for i, origin in enumerate(spec.origins):
        if not re.fullmatch(r"(https?://[a-z0-9.\-\[\]:]+|null)", origin.lower().rstrip("/")):
            # shown_address: an origin with USER:PASSWORD@ in it is refused without the password.
            shown = shown_address(origin)
            raise fail(("origins", i), f"origin {shown!r}: write scheme://host[:port], no path")
    for i, host in enumerate(spec.hosts):
        if not re.fullmatch(r"[A-Za-z0-9.-]+", host):
            raise fail(("hosts", i), f"host {host!r}: a DNS name without port")
    return PolicySet(
        policies=policies,
        default=default,
        origins=frozenset(o.lower().rstrip("/") for o in spec.origins),
        hosts=frozenset(h.lower().rstrip(".") for h in spec.hosts),
        source=source,
        bindings=bindings,
        sources=_compile_sources(spec.sources, ("sources",), fail) or SourceRules(),
        owners=_compile_owners(spec, fail),
        bound=_bound_modes(spec, policies),
    )


def _compile_modes(spec: PolicyFileSpec, policies: Mapping[str, Policy]) -> None:
    """Each policy's rollout mode (`policies.NAME.mode`, policy/modes.py)."""
    for name, policy_spec in spec.policies.items():
        policies[name].mode = policy_spec.mode


def _bound_modes(spec: PolicyFileSpec, policies: Mapping[str, Policy]) -> dict[int, Policy]:
    """Bindings with a mode other than their policy's: binding number -> a copy of the policy
    in that mode (the same rules and caches; only what is done with its refusals differs)."""
    bound: dict[int, Policy] = {}
    for index, item in enumerate(spec.bindings or ()):
        policy = policies[item.policy]
        if item.mode is not None and item.mode != policy.mode:
            bound[index + 1] = dataclasses.replace(policy, mode=item.mode)
    return bound


def _compile_limits(spec: LimitsSpec | None, loc: Location, fail: Any) -> Limits | None:
    """`limits:`: each number positive, a burst and costs only with a rate, a cost never more
    than the bucket holds (it could never pass), costs of known operations only."""
    if spec is None:
        return None
    if spec.rate is None and spec.concurrent is None and spec.streams is None:
        raise fail(loc, "limits: give at least one of rate, concurrent, streams")
    rate = None
    if spec.rate is not None:
        rate = float(spec.rate)
        if not (math.isfinite(rate) and rate > 0):
            raise fail((*loc, "rate"), "limits: rate must be a positive number (per second)")
    elif spec.burst is not None or spec.costs:
        key = "burst" if spec.burst is not None else "costs"
        raise fail((*loc, key), f"limits: {key} applies to a rate: give 'rate:' too")
    burst = 0
    if rate is not None:
        burst = spec.burst if spec.burst is not None else max(1, math.ceil(2 * rate))
        if burst < 1:
            raise fail((*loc, "burst"), "limits: burst must be at least 1")
    for key in ("concurrent", "streams"):
        value = getattr(spec, key)
        if value is not None and value < 1:
            raise fail((*loc, key), f"limits: {key} must be at least 1")
    for operation, cost in spec.costs.items():
        if operation not in OPERATIONS:
            close = _suggest(operation)
            hint = f"; did you mean {close}?" if close else ""
            raise fail((*loc, "costs", operation), f"unknown operation {operation!r}{hint}")
        if cost < 0 or cost > burst:
            raise fail(
                (*loc, "costs", operation),
                f"limits: the cost of {operation} must be 0 to the burst ({burst}): a larger "
                "one would never pass",
            )
    return Limits(rate, burst, spec.concurrent, spec.streams, dict(spec.costs))


def _compile_owners(spec: PolicyFileSpec, fail: Any) -> dict[str, str]:
    """`owners:` as identity key -> owner name, each identity under one owner only."""
    if spec.owners and not any(p.ownership for p in spec.policies.values()):
        raise fail(("owners",), "'owners:' names owners for ownership mode: no policy has it")
    owners: dict[str, str] = {}
    for owner, identities in spec.owners.items():
        if not OWNER_NAME.fullmatch(owner):
            raise fail(
                ("owners", owner),
                f"owner name {owner!r}: use letters, digits, . _ - @ (no ':', which marks an "
                "identity's own label such as user:alice)",
            )
        if not identities:
            raise fail(("owners", owner), f"owner {owner!r} lists no identity")
        for index, text in enumerate(identities):
            key = parse_identity(text)
            if key is None:
                raise fail(
                    ("owners", owner, index),
                    f"identity {text!r}: write user:NAME, token:IDENTITY, cert:NAME or anonymous",
                )
            if key in owners:
                raise fail(
                    ("owners", owner, index),
                    f"identity {text!r} is already owner {owners[key]!r}: one owner each",
                )
            owners[key] = owner
    return owners


_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([bkmgt]?)b?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(value: str | int) -> int:
    """`512m`, `2g`, `1073741824`: bytes, with the docker CLI's 1024-based units."""
    if isinstance(value, int):
        return value
    match = _SIZE.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"{value!r} is not a size (write 512m, 2g, or bytes)")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def _compile_guardrails(
    spec: GuardrailsSpec | bool | None, loc: Location, fail: Any
) -> Guardrails | None:
    if spec is False:
        return None
    if spec is None or spec is True:
        return Guardrails()
    assert isinstance(spec, GuardrailsSpec)
    host_paths = []
    for i, item in enumerate(spec.host_paths):
        if not item.path.startswith("/"):
            raise fail((*loc, "host_paths", i), f"host path {item.path!r} must be absolute")
        prefix = "/" + posixpath.normpath(item.path).lstrip("/")
        host_paths.append(HostPathRule(prefix, item.read_only))
    for i, namespace in enumerate(spec.namespaces):
        base, _, suffix = namespace.partition(":")
        if base not in NAMESPACES or suffix not in ("", "container"):
            known = ", ".join(NAMESPACES)
            raise fail(
                (*loc, "namespaces", i),
                f"namespace {namespace!r}: use {known} (or NAME:container to join another "
                "container's)",
            )
    for fs_type, servers in spec.volume_types.items():
        if fs_type not in NETWORK_TYPES:
            known = ", ".join(NETWORK_TYPES)
            raise fail(
                (*loc, "volume_types", fs_type),
                f"volume type {fs_type!r}: only network file systems may be allowed ({known}); "
                "tmpfs needs no entry",
            )
        if not servers:
            raise fail((*loc, "volume_types", fs_type), "name the servers it may connect to")
    try:
        max_memory = parse_size(spec.max_memory) if spec.max_memory is not None else None
    except ValueError as exc:
        raise fail((*loc, "max_memory"), str(exc)) from None
    if max_memory is not None and max_memory <= 0:
        raise fail((*loc, "max_memory"), "max_memory must be positive")
    if spec.max_cpus is not None and not (math.isfinite(spec.max_cpus) and spec.max_cpus > 0):
        raise fail((*loc, "max_cpus"), "max_cpus must be a positive number")
    fetch_urls = spec.fetch_urls
    if spec.image_import_urls is not None:
        if fetch_urls is not None and fetch_urls != spec.image_import_urls:
            raise fail(
                (*loc, "image_import_urls"),
                "image_import_urls is the older name of fetch_urls: give one of them",
            )
        fetch_urls = spec.image_import_urls
    for i, driver in enumerate(spec.network_drivers):
        if not driver:
            raise fail((*loc, "network_drivers", i), "a network driver name is required")
    network_subnets = _parse_each(
        spec.network_subnets, subnets.parse_network, loc, "network_subnets", fail
    )
    host_ports = _parse_each(spec.host_ports, hostports.parse_policy_range, loc, "host_ports", fail)
    return Guardrails(
        privileged=spec.privileged,
        capabilities=frozenset(normalize_capability(c) for c in spec.capabilities),
        devices=spec.devices,
        # The most specific rule decides: `/srv` read-only and `/srv/ci` read-write.
        host_paths=tuple(sorted(host_paths, key=lambda r: len(r.prefix), reverse=True)),
        volumes_from=spec.volumes_from,
        namespaces=frozenset(spec.namespaces),
        security_overrides=spec.security_overrides,
        require_no_new_privileges=spec.require_no_new_privileges,
        sysctls=tuple(spec.sysctls),
        runtimes=frozenset(spec.runtimes) if spec.runtimes is not None else None,
        images=tuple(spec.images) if spec.images is not None else None,
        required_labels=dict(spec.required_labels),
        max_memory=max_memory,
        max_nano_cpus=round(spec.max_cpus * 1e9) if spec.max_cpus is not None else None,
        volume_drivers=frozenset(spec.volume_drivers),
        volume_types={t: tuple(servers) for t, servers in spec.volume_types.items()},
        exec_root=spec.exec.root,
        exec_privileged=spec.exec.privileged,
        fetch_urls=bool(fetch_urls),
        network_drivers=frozenset(spec.network_drivers),
        network_subnets=tuple(network_subnets),
        host_ports=hostports.merge(host_ports),
        plugin_privileges=spec.plugin_privileges,
        swarm=spec.swarm,
        buildkit=spec.buildkit,
    )


def _parse_each(
    entries: Sequence[_E], parse: Callable[[_E], _T], loc: Location, key: str, fail: Any
) -> list[_T]:
    """Each entry of a guardrail list parsed; the first that does not parse is an error at its
    own line, `KEY: why`."""
    parsed = []
    for i, entry in enumerate(entries):
        try:
            parsed.append(parse(entry))
        except ValueError as exc:
            raise fail((*loc, key, i), f"{key}: {exc}") from None
    return parsed


def _compile_sources(
    spec: SourcesSpec | None, loc: Location, fail: Any, *, unix_exempt: bool = True
) -> SourceRules | None:
    if spec is None:
        return None
    lists = []
    for key, entries in (("allow", spec.allow), ("deny", spec.deny)):
        for i, entry in enumerate(entries):
            try:
                parse_address_list([entry])
            except AddressListError as exc:
                raise fail((*loc, key, i), f"source address {exc}") from None
        lists.append(parse_address_list(entries))
    return SourceRules(lists[0], lists[1], unix_exempt)


def _compile_bindings(
    spec: PolicyFileSpec,
    policies: Mapping[str, Policy],
    lines: Mapping[Location, int],
    fail: Any,
) -> tuple[Binding, ...] | None:
    for group, listed in spec.groups.items():
        if not _NAME.fullmatch(group):
            raise fail(("groups", group), f"group name {group!r}: use letters, digits, . _ -")
        if not listed:
            raise fail(("groups", group), f"group {group!r} has no members")
    if spec.bindings is None:
        if spec.groups:
            raise fail(("groups",), "groups are used by 'bindings:', and there are none")
        return None
    if not spec.bindings:
        raise fail(("bindings",), "'bindings:' is empty: nobody would get a policy")
    bindings = []
    for index, item in enumerate(spec.bindings):
        loc: Location = ("bindings", index)
        if item.policy not in policies:
            raise fail((*loc, "policy"), f"policy {item.policy!r} is not defined")
        members: set[str] = set()
        for i, group in enumerate(item.groups):
            if group not in spec.groups:
                raise fail((*loc, "groups", i), f"group {group!r} is not defined in 'groups:'")
            members.update(spec.groups[group])
        bindings.append(
            Binding(
                number=index + 1,
                policy=item.policy,
                users=frozenset(item.users),
                tokens=frozenset(item.tokens),
                certificates=frozenset(item.certificates),
                members=frozenset(members),
                groups=tuple(item.groups),
                anonymous=item.anonymous,
                authenticated=item.authenticated,
                sources=_compile_sources(item.sources, (*loc, "sources"), fail, unix_exempt=False),
                line=_line_for(lines, loc),
                **_compile_peer_keys(item, loc, fail),
            )
        )
    return tuple(bindings)


def _compile_peer_keys(item: BindingSpec, loc: Location, fail: Any) -> dict[str, Any]:
    """A binding's peer keys (`container:`, `service:`/`services:`, `uids:`, `gids:`) as
    `Binding` fields (docs/policy.md, "The calling container as the identity")."""
    keys: dict[str, Any] = {}
    spec = item.container
    if spec is not None:
        for key in spec.labels:
            if not key or "*" in key:
                raise fail(
                    (*loc, "container", "labels", key), f"label key {key!r}: a key is written whole"
                )
        keys["container"] = ContainerMatch(
            labels=tuple((k, compile_pattern(v)) for k, v in sorted(spec.labels.items())),
            names=tuple(compile_pattern(n.removeprefix("/")) for n in spec.names),
            images=tuple(compile_pattern(i) for i in spec.images),
            shown="; ".join(
                f"{what} {text}"
                for what, text in (
                    ("labels", ", ".join(f"{k}={v}" for k, v in sorted(spec.labels.items()))),
                    ("names", ", ".join(spec.names)),
                    ("images", ", ".join(spec.images)),
                )
                if text
            ),
        )
    services = [*item.services, *([item.service] if item.service is not None else [])]
    for i, service in enumerate(services):
        if not _NAME.fullmatch(service):
            raise fail(
                (*loc, "services" if i < len(item.services) else "service"),
                f"service name {service!r}",
            )
    if services:
        keys["services"] = frozenset(services)
    for key in ("uids", "gids"):
        values = getattr(item, key)
        for i, value in enumerate(values):
            if value < 0:
                raise fail((*loc, key, i), f"{key}: {value} is not an id")
        if values:
            keys[key] = frozenset(values)
    if keys and (item.anonymous or item.authenticated):
        raise fail(
            (*loc, "container" if spec is not None else next(iter(keys))),
            "a binding by the unix-socket peer names its callers: not with anonymous or "
            "authenticated (write two bindings)",
        )
    return keys


def _guard_peer_labels(
    spec: PolicyFileSpec, policies: Mapping[str, Policy], bindings: Sequence[Binding] | None
) -> None:
    """Each policy's guardrails learn the label conditions of the container bindings, so a
    create whose labels meet one is refused (body/guardrails.py `_peer_labels`), unless its
    guardrails say `peer_labels: true`. Policies without guardrails (`guardrails: false`)
    check no body at all, this included."""
    conditions = tuple(
        (f"binding {b.number} (policy {b.policy})", b.container.labels)
        for b in bindings or ()
        if b.container is not None and b.container.labels
    )
    if not conditions:
        return
    for name, policy in policies.items():
        given = spec.policies[name].guardrails
        allowed = isinstance(given, GuardrailsSpec) and given.peer_labels
        if policy.guardrails is not None and not allowed:
            policy.guardrails = dataclasses.replace(policy.guardrails, peer_labels=conditions)


def _compile_matcher(spec: MatchSpec, loc: Location, fail: Any) -> Matcher:
    sections = operations = methods = None
    paths = None
    if spec.sections is not None:
        for i, section in enumerate(spec.sections):
            if section != "*" and section not in SECTIONS:
                raise fail(
                    (*loc, "sections", i),
                    f"unknown section {section!r} (known: {', '.join(sorted(SECTIONS))})",
                )
        sections = frozenset(spec.sections)
    if spec.operations is not None:
        for i, operation in enumerate(spec.operations):
            if operation not in OPERATIONS:
                close = _suggest(operation)
                hint = f"; did you mean {close}?" if close else ""
                raise fail((*loc, "operations", i), f"unknown operation {operation!r}{hint}")
        operations = frozenset(spec.operations)
    if spec.methods is not None:
        for i, method in enumerate(spec.methods):
            if method not in _METHODS:
                raise fail(
                    (*loc, "methods", i), f"unknown method {method!r} (methods are upper case)"
                )
        methods = frozenset(spec.methods)
    if spec.paths is not None:
        compiled = []
        for i, pattern in enumerate(spec.paths):
            if re.match(r"/v[0-9.]+/", pattern):
                raise fail(
                    (*loc, "paths", i),
                    f"path pattern {pattern!r}: patterns match the path without its /vX.Y prefix",
                )
            try:
                compiled.append(compile_path_pattern(pattern))
            except PatternError as exc:
                raise fail((*loc, "paths", i), str(exc)) from None
        paths = tuple(compiled)
    objects = None
    if spec.objects is not None:
        objects = _compile_objects(spec.objects)
        for i, operation in enumerate(spec.operations or ()):
            if not scopable(OPERATIONS[operation]):
                raise fail(
                    (*loc, "operations", i),
                    f"{operation} is not about objects 'objects:' can cover (containers, "
                    "exec instances, services, tasks, networks, volumes, secrets, configs): "
                    "allow it in a rule of its own",
                )
    return Matcher(sections, operations, methods, paths, spec.unknown, objects)


def _compile_objects(spec: ObjectsSpec) -> ObjectScope:
    """A rule's `objects:` (policy/scopes.py); its text is how explanations show it."""
    text = []
    if spec.labels:
        text.append("labels=" + ",".join(f"{k}={v}" for k, v in spec.labels.items()))
    if spec.names is not None:
        text.append("names=" + ",".join(spec.names))
    if spec.stacks is not None:
        text.append("stacks=" + ",".join(spec.stacks))
    return ObjectScope(
        labels=tuple((key, compile_pattern(value)) for key, value in spec.labels.items()),
        names=None if spec.names is None else tuple(compile_pattern(n) for n in spec.names),
        stacks=None if spec.stacks is None else frozenset(spec.stacks),
        text=" ".join(text),
    )


def _suggest(name: str) -> str | None:
    lowered = name.lower()
    for known in OPERATIONS:
        if known.lower() == lowered:
            return str(known)
    return None
