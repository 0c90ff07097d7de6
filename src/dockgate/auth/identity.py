"""Who made a request, and how the gateway knows: the value bindings, logs and the audit share."""

from __future__ import annotations

from dataclasses import dataclass, field

BASIC = "basic"  # htpasswd user name and password
TOKEN = "token"  # bearer token; the name is the token's identity, the detail the token's name
CERTIFICATE = "certificate"  # verified TLS client certificate; the detail is its subject
ANONYMOUS = "anonymous"  # no credentials, where authentication is configured
NONE = "none"  # no credentials, and no authentication configured at all
# Named by the unix-socket peer (auth/peerproc.py, auth/peerlookup.py), for a caller without
# credentials where bindings name peers:
CONTAINER = "container"  # the calling process's container; the name is the container's, the
# detail its full ID
PROCESS = "process"  # a host process (in no container); the name is `uid:N`, the detail `gid:N`


@dataclass(frozen=True, slots=True)
class ContainerFacts:
    """What the daemon says of the calling container (GET /containers/ID/json), for bindings
    by container and service. Labels, image and service are fixed at the container's create
    for its whole life (an ID is never reused, a restart keeps them); its name is not
    (`docker rename`)."""

    id: str  # full ID
    name: str  # without the leading `/`
    labels: tuple[tuple[str, str], ...]  # Config.Labels, sorted
    image: str  # Config.Image: the image as the create named it (`traefik:v3.1`)
    service: str  # the Swarm service of a task container (com.docker.swarm.service.name), or ""
    started_at: str = ""  # State.StartedAt, for the audit trail


@dataclass(frozen=True, slots=True)
class Identity:
    name: str  # user name, token identity, certificate name; "anonymous" or "-"
    method: str  # one of the constants above
    detail: str = ""  # token name, certificate subject; a container's full ID; `gid:N`
    # The calling container (method CONTAINER): what container bindings match.
    container: ContainerFacts | None = field(default=None, compare=False)

    @property
    def authenticated(self) -> bool:
        return self.method in (BASIC, TOKEN, CERTIFICATE)

    def describe(self) -> str:
        """For messages: `user alice`, `token ci-runner (ci)`, `certificate ops`, `anonymous`."""
        if self.method == BASIC:
            return f"user {self.name}"
        if self.method == TOKEN:
            return f"token {self.detail} ({self.name})"
        if self.method == CERTIFICATE:
            return f"certificate {self.name}"
        if self.method == CONTAINER:
            return f"container {self.name}"
        if self.method == PROCESS:
            return f"process {self.name} ({self.detail})"
        return "anonymous callers"


ANONYMOUS_IDENTITY = Identity(ANONYMOUS, ANONYMOUS)
NO_AUTH_IDENTITY = Identity("-", NONE)
