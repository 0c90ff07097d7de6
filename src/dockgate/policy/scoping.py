"""Object scopes enforced on requests about one object and on creates (the pure part).

A request allowed with a `Verdict.scope` (policy/scopes.py) is judged here without I/O:

- about one object (its path names it: `/containers/web/restart`, `/exec/ID/start`,
  `/services/ID/logs`, ...): a look-up (`scope_lookup`), which the relay carries out
  (relay/steps.py `_check_owners`, with ownership/scopefind.py): the object, found among the
  covered objects only, must be covered; then the request goes on pinned to its full ID, else
  it is answered the daemon's 404 for a missing object (`absent`), as if it did not exist;
- a create (ContainerCreate, NetworkCreate, VolumeCreate, ServiceCreate, SecretCreate,
  ConfigCreate) and an update carrying a whole spec (ServiceUpdate, SecretUpdate,
  ConfigUpdate: after the look-up of the object its path names): the object as the body
  makes it must be covered (`create_problem`), its labels and name read as the daemon decodes
  the body (body/gojson.py);
- a rename (ContainerRename): the container, under its new name, must still be covered
  (`rename_problem`, after the look-up);
- the objects a body names (ownership.references: networks, containers, volumes, secrets,
  configs a create joins, shares, mounts; the container of a NetworkConnect): each must exist
  and be covered too, judged by the relay (`_check_scoped_references`);
- a service's task containers (`task_problem`): their `ContainerSpec.Labels` must be covered;
  a rollback, whose spec is not in the request, is refused (`rollback_problem`).

In a policy with `objects:` rules, what a request reaches indirectly is judged even when the
rule that allowed it has none, by the policy's reach for the object's kind (Policy.reach,
policy/scopes.py `Reach.of`: per kind, the union of the scopes of the rules about that kind;
a kind no scoped rule is about is not judged): a commit's container and a build's
`networkmode` (`indirect_lookup`, looked up as above), the objects a body names; hex-only new
names, `system df` and prunes of scoped kinds are refused there (policy/plan.py), and a swarm
create's name that starts an existing ID is looked up (`id_like_name`).

Only the body's labels count for a create: the daemon merges the image's labels into a new
container's under every key the body does not set, but that is known only after the create;
later requests about the container judge its inspect, image labels included.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode

from dockgate.body import gojson
from dockgate.http.query import query_value
from dockgate.ownership.lists import LookUpAll
from dockgate.ownership.operations import (
    CONFIG,
    CONTAINER,
    LABELLED_BUILD,
    NETWORK,
    OWNED_CREATES,
    QUERY_REFERENCES,
    SECRET,
    SERVICE,
    VOLUME,
    Kind,
    LookUp,
    object_kind,
    reference_of,
    with_reference,
)
from dockgate.ownership.pinning import PREDEFINED_NETWORKS
from dockgate.policy.scopes import SCOPED_KINDS, Reach, Scope
from dockgate.refusal import Refusal

STAGE = "scope"
# Creates and whole-spec updates whose body makes an object a scope must cover.
SCOPED_CREATES = OWNED_CREATES


@dataclass(frozen=True, slots=True)
class ScopeCheck:
    """What the look-up of a scoped request's object checks besides its existence."""

    scope: Scope
    renamed: str | None = None  # ContainerRename: the new name, which must be covered too


def scope_lookup(
    operation: str, template: str, raw_target: str, path: str, scope: Scope
) -> tuple[LookUpAll, ScopeCheck] | None:
    """The look-up of the one object a request is about, or None when it names none (a
    create, a list, the event stream)."""
    if operation in QUERY_REFERENCES:
        return indirect_lookup(operation, raw_target, scope)
    kind = object_kind(operation, template)
    if kind is None or kind.name not in SCOPED_KINDS:
        return None
    found = reference_of(path, kind)
    if found is None:
        return None
    index, reference = found
    step = LookUp(kind, reference, lambda full_id: with_reference(raw_target, index, full_id))
    return LookUpAll.of_one(step), ScopeCheck(scope, _new_name(operation, raw_target))


def _new_name(operation: str, raw_target: str) -> str | None:
    """A rename's new name as the daemon stores it, without its leading `/` (the router reads
    `r.Form.Get("name")`: the first value; moby daemon/rename.go adds the `/` back)."""
    if operation != "ContainerRename":
        return None
    query = raw_target.partition("?")[2]
    name = next((v for k, v in parse_qsl(query, keep_blank_values=True) if k == "name"), "")
    return name.removeprefix("/")


def absent(kind: Kind, reference: str) -> Refusal:
    """The daemon's own answer for a missing object (what an object out of scope gets)."""
    return Refusal(404, kind.missing.format(reference), STAGE, "out of scope")


def absent_named(kind: Kind, reference: str) -> Refusal:
    """An object a body names that is out of scope or missing: 403, not 404 (the docker CLI
    takes a 404 to a create for a missing image and would pull it), worded as missing. A
    volume gets a hint, the same whether it is missing or out of scope: the daemon would make
    a missing one without labels, outside the scope, so it must be made first."""
    message = f"dockgate: {kind.missing.format(reference)}"
    if kind.name == "volume":
        message += (
            " (a volume named in a scoped request must exist and be covered: create it first"
            " with the labels the scope needs)"
        )
    return Refusal(403, message, STAGE, "out of scope")


def rename_problem(check: ScopeCheck, labels: Mapping[str, str]) -> str | None:
    """Why a covered container may not take its new name (it would leave the scope)."""
    if check.renamed is None or check.scope.covers(labels, check.renamed):
        return None
    return (
        f"the container renamed {check.renamed!r} would not be covered by "
        f"{check.scope.describe()}: choose a name the scope covers"
    )


def created(operation: str, query: str, body: bytes) -> tuple[dict[str, str], str | None]:
    """The labels and name of the object a create (or whole-spec update) body makes, as the
    daemon decodes it: a container's `Labels` and the `name` query parameter (the first
    value, without its leading `/`), a network's or volume's `Labels` and `Name`, a service's,
    secret's or config's spec `Labels` and `Name`. A name left empty is None: the daemon makes
    one up. ValueError for a body that cannot be read here."""
    one = _one(body)
    labels = _labels(one)
    if operation == "ContainerCreate":
        given = [v for k, v in parse_qsl(query, keep_blank_values=True) if k == "name"]
        name: object = given[0].removeprefix("/") if given else ""
    else:
        name = gojson.scalar(one, "Name")
    return labels, name if isinstance(name, str) and name else None


def _one(body: bytes) -> gojson.Struct:
    top = gojson.parse(body, strict_end=True)
    if not isinstance(top, gojson.GoObject):
        raise ValueError("the body must be one JSON object")  # noqa: TRY004 - a 400
    return (top,)


def _labels(struct: gojson.Struct) -> dict[str, str]:
    """A `Labels` map as Go decodes it into `map[string]string`. ValueError for a value that
    is not a string."""
    labels: dict[str, str] = {}
    for key, value in (gojson.mapping(struct, "Labels") or {}).items():
        if value is None:
            labels[key] = ""  # Go leaves a map's string element at its zero value
        elif isinstance(value, str):
            labels[key] = value
        else:
            raise ValueError(f"the label {key!r} is not a string")
    return labels


def task_problem(scope: Scope, operation: str, body: bytes) -> str | None:
    """Why the containers a service's tasks run would not be covered, or None. The daemon
    labels a task's container with `TaskTemplate.ContainerSpec.Labels` (not the service's
    own `Labels`: swarmkit's container adapter), which is where `docker stack deploy` puts the
    stack label too; the container is named `<service>.<slot>.<task ID>`, chosen by swarmkit,
    so a `names` condition is judged on the service's name, which the container's begins
    with. A spec without a ContainerSpec runs no container. ValueError for a body that
    cannot be read here."""
    if operation not in ("ServiceCreate", "ServiceUpdate"):
        return None
    one = _one(body)
    task = gojson.struct(one, "TaskTemplate", pointer=False)
    spec = gojson.struct(task, "ContainerSpec", pointer=True)
    if not spec:
        return None
    name = gojson.scalar(one, "Name")
    if scope.covers(_labels(spec), name if isinstance(name, str) else ""):
        return None
    return (
        f"the service's task containers (TaskTemplate.ContainerSpec.Labels) would not be "
        f"covered by {scope.describe()}: give them the labels the scope needs "
        "(docker service create --container-label)"
    )


def rollback_problem(operation: str, query: str) -> str | None:
    """A ServiceUpdate with `rollback=previous` makes the daemon deploy the service's
    PreviousSpec and ignore the body (moby daemon/cluster/services.go UpdateService: the
    router reads `r.URL.Query().Get("rollback")`, the first value; "" and "none" are no
    rollback, anything else but "previous" is an error). The previous spec is not in the
    request, and may be out of the scope: refused."""
    if operation != "ServiceUpdate":
        return None
    if query_value(query, "rollback") in (None, "", "none"):
        return None
    return (
        "rollback= deploys the service's previous spec, which the scope cannot judge: "
        "update the service with the spec it should have"
    )


def indirect_lookup(
    operation: str, raw_target: str, reach: Reach | Scope
) -> tuple[LookUpAll, ScopeCheck] | None:
    """The existing object a request's query reaches besides the one its path names, which
    must be covered too: a commit's `container` (the container whose files it reads), a
    build's `networkmode` (`container:X`, whose namespaces the build steps join, or a
    network; the predefined ones are not objects: ownership/pinning.py). Both read as the
    daemon does (`r.FormValue`: the first value). None when it reaches none, or an object of
    a kind the reach does not scope (policy/scopes.py `Reach.of`)."""
    query = raw_target.partition("?")[2]
    parameter = QUERY_REFERENCES.get(operation)
    prefix = ""
    kind = CONTAINER
    if parameter is not None:
        reference = query_value(query, parameter) or ""
    elif operation == LABELLED_BUILD:
        parameter = "networkmode"
        reference = query_value(query, parameter) or ""
        if reference in PREDEFINED_NETWORKS:
            return None
        if reference.startswith("container:"):
            prefix, reference = "container:", reference.partition(":")[2]
        else:
            kind = NETWORK
    else:
        return None
    if not reference:
        return None  # (the daemon refuses a commit of no container)
    scope = reach.of(kind.name) if isinstance(reach, Reach) else reach
    if scope is None:
        return None  # (the policy scopes no object of that kind)
    name = parameter

    def pin(full_id: str) -> str:
        path, _, rest = raw_target.partition("?")
        kept = [(k, v) for k, v in parse_qsl(rest, keep_blank_values=True) if k != name]
        kept.append((name, prefix + full_id))
        return path + "?" + urlencode(kept, quote_via=quote)

    return LookUpAll.of_one(LookUp(kind, reference, pin)), ScopeCheck(scope)


def create_problem(scope: Scope, operation: str, query: str, body: bytes) -> str | None:
    """Why the object a create body makes would not be covered, or None. ValueError for a
    body that cannot be read here."""
    labels, name = created(operation, query, body)
    if name is not None and scope.covers(labels, name):
        return None
    if name is None and any(
        rule.names is None and rule.covers(labels, "") for _, rule in scope.rules
    ):
        return None  # covered whatever name the daemon makes up
    what = _WHAT.get(operation, "the object")
    rules = scope.describe()
    if name is None and any(rule.names is not None for _, rule in scope.rules):
        return f"{what} has no name and would not be covered by {rules}: name it"
    shown = f" {name!r}" if name is not None else ""
    return (
        f"{what}{shown} would not be covered by {rules}: add the labels (or choose the name) "
        "it needs"
    )


def claimed(operation: str, query: str, body: bytes) -> list[tuple[Kind, str]]:
    """The name a create takes whose holder the daemon's answer would show: a container's
    (its 409 names the holder's full ID: moby daemon/names.go nameConflict) as `/name`, found
    by name only; a volume's (a create of an existing name answers 201 with that volume,
    labels and options: moby volume/service.go Create). Held by an object out of scope, the
    create is refused before the daemon answers (`name_taken`)."""
    if operation not in ("ContainerCreate", "VolumeCreate"):
        return []
    _, name = created(operation, query, body)
    if name is None:
        return []
    return [(CONTAINER, "/" + name)] if operation == "ContainerCreate" else [(VOLUME, name)]


def name_taken(kind: Kind, reference: str) -> Refusal:
    """A create's name (or a rename's), held by an object out of scope: a 409, as the daemon
    answers for a name taken, naming no holder."""
    if kind.name == "container":
        message = (
            f'Conflict. The container name "{reference}" is already in use by another '
            "container. You have to remove (or rename) that container to be able to reuse "
            "that name."
        )
    else:
        message = f"dockgate: a {kind.name} named {reference!r} exists and is not in your scope"
    return Refusal(409, message, STAGE, "name taken out of scope")


# Swarm objects' creates, by the kind they make. Their IDs are 25 characters of [0-9a-z]
# (swarmkit identity.NewID); swarmkit resolves a reference as a full ID, then a name, then an
# ID prefix (controlapi getService, getSecret, getConfig), so a new object named as the start
# of another's ID takes every later reference by that prefix. A service cannot be renamed
# (swarmkit controlapi errRenameNotSupported), nor a secret or config (only their labels
# change): the create is the only way to such a name.
SWARM_CREATES = {"ServiceCreate": SERVICE, "SecretCreate": SECRET, "ConfigCreate": CONFIG}
SWARM_ID_CHARACTERS = 25
_ID_LIKE = re.compile(f"[0-9a-z]{{1,{SWARM_ID_CHARACTERS}}}")


def id_like_name(operation: str, body: bytes) -> tuple[Kind, str] | None:
    """The name a swarm create gives its object when it could be the start of an existing
    object's ID of that kind (base 36, at most 25 characters): to be looked up (one list,
    ownership/scopefind.py `id_prefix_taken`). None for other names, other operations and a
    body that cannot be read (refused elsewhere, or by the daemon)."""
    kind = SWARM_CREATES.get(operation)
    if kind is None:
        return None
    try:
        _, name = created(operation, "", body)
    except (ValueError, RecursionError):
        return None
    if name is None or not _ID_LIKE.fullmatch(name):
        return None
    return kind, name


def id_name_taken(operation: str, kind: Kind, name: str) -> Refusal:
    """A swarm create's name that is the start of an existing object's ID: 400, as a hex-only
    name is (ownership/operations.py hex_name_problem), naming no object."""
    message = (
        f"dockgate: {operation}: the name {name!r} is the start of an existing {kind.name}'s "
        f"ID, and the daemon resolves a name before an ID prefix: choose a name with a "
        "character other than [0-9a-z] (a '-' or '_'), or a longer one"
    )
    return Refusal(400, message, STAGE, "ID prefix name")


def with_duplicate_check(body: bytes) -> bytes:
    """A scoped NetworkCreate's body with `"CheckDuplicate":true` written last (Go's decoder
    keeps the last duplicate, keys folded): without it the 20.10 daemon makes a second network
    of a name another holds and answers with a warning naming the holder's ID (moby
    daemon/network.go createNetwork), which may be out of scope; with it, a name taken is a
    409 that names nobody (ownership's `with_owner_label` does the same). The body is one
    JSON object (read whole by `created`, strict end)."""
    text = body.rstrip(b" \t\r\n")
    inner = text[:-1].rstrip(b" \t\r\n")
    separator = b"" if inner.endswith(b"{") else b","
    return inner + separator + b'"CheckDuplicate":true}'


_WHAT = {
    "ContainerCreate": "the container",
    "NetworkCreate": "the network",
    "VolumeCreate": "the volume",
    "ServiceCreate": "the service",
    "ServiceUpdate": "the service as updated",
    "SecretCreate": "the secret",
    "SecretUpdate": "the secret as updated",
    "ConfigCreate": "the config",
    "ConfigUpdate": "the config as updated",
}
