"""What a request body may be, per operation: the media types each handler of the daemon reads.

Every operation of the route table has one expectation (`EXPECTED`), taken from what its
handler does with `r.Body` in moby (api/server/router/*/ in 20.10, daemon/server/router/*/
today):

- `JSON`: the handler decodes JSON (`httputils.CheckForJSON`/`ReadJSON`, or
  `json.NewDecoder(r.Body)`). A body needs no Content-Type or `application/json` (parameters
  allowed), as `CheckForJSON` says; an empty body always passes.
- `STREAM`: the handler reads raw bytes (a build context, an image or layer tar, an archive to
  extract, a plugin's rootfs, a hijacked attach's stdin). Any media type but the form types:
  clients send `application/x-tar`, `application/tar`, and the Go client `text/plain`.
- `NONE`: the handler reads no body. A body is read by the gateway (up to `IGNORED_BODY_LIMIT`)
  and dropped: the daemon gets `Content-Length: 0`. dockerode (docker-modem) repeats its query
  options as a JSON body on such POSTs (`{"signal": "SIGKILL"}` on a kill), so a JSON body is
  accepted; any other media type is refused.
- `EMPTY`: like `NONE`, except that some API version's handler does read a body, so a body with
  a value is refused (403) rather than dropped: only an empty JSON value (`{}`, `null`) passes.
  `ContainerStart`: below API 1.24, moby 20.10's `postContainersStart` decodes a body over 7
  bytes (or chunked) as a HostConfig that *replaces* the container's (host paths, privileges).

On every operation, in every policy, `multipart/form-data` and
`application/x-www-form-urlencoded` bodies are refused: Go's `Request.FormValue` (the build
handler) parses a multipart body, and `ParseForm` (most handlers) a url-encoded one, into
parameters that come *before* the query's own, so `networkmode=host` in a build's form body
would win over a query the gateway checked. The media type is read as Go's
`mime.ParseMediaType` does (text before `;`, trimmed, lower-cased); since Go's `ToLower` is
Unicode-aware (`İ` becomes `i`), a Content-Type with any non-ASCII byte is refused, and so are
two Content-Type fields (Go reads the first, another reader might take the last).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType

from dockgate.refusal import Refusal


class BodyKind(enum.Enum):
    JSON = "json"
    STREAM = "stream"
    NONE = "none"
    EMPTY = "empty"


J, S, N, E = BodyKind.JSON, BodyKind.STREAM, BodyKind.NONE, BodyKind.EMPTY

# Per operation, what its handler reads (moby source in the comment where it reads a body).
EXPECTED: Mapping[str, BodyKind] = MappingProxyType(
    {
        # checkpoint router: checkpoint_routes.go postContainerCheckpoint (json.NewDecoder)
        "CheckpointList": N,
        "CheckpointCreate": J,
        "CheckpointDelete": N,
        # container router: container_routes.go, exec.go, copy.go
        "ContainerArchiveInfo": N,
        "ContainerList": N,
        "ContainerExport": N,
        "ContainerChanges": N,
        "ContainerInspect": N,
        "ContainerTop": N,
        "ContainerLogs": N,
        "ContainerStats": N,
        "ContainerAttachWebsocket": N,
        "ExecInspect": N,
        "ContainerArchive": N,
        "ContainerCreate": J,  # postContainersCreate: CheckForJSON, DecodeConfig
        "ContainerKill": N,
        "ContainerPause": N,
        "ContainerUnpause": N,
        "ContainerRestart": N,
        "ContainerStart": E,  # postContainersStart: a HostConfig below API 1.24
        "ContainerStop": N,
        "ContainerWait": N,
        "ContainerResize": N,
        # postContainersAttach: the daemon hijacks the connection; bytes after the head (any
        # body included, from Go's buffered reader) are the container's stdin.
        "ContainerAttach": S,
        "ContainerCopy": J,  # copy.go postContainersCopy (20.10): CheckForJSON, {"Resource"}
        "ContainerExec": J,  # exec.go postContainerExecCreate: CheckForJSON
        "ExecStart": J,  # exec.go postContainerExecStart: ExecStartCheck
        "ExecResize": N,
        "ContainerRename": N,
        "ContainerUpdate": J,  # postContainerUpdate: CheckForJSON
        "ContainerPrune": N,
        "ImageCommit": J,  # postCommit: CheckForJSON, DecodeConfig (an empty body is allowed)
        "PutContainerArchive": S,  # copy.go putContainersArchive: ContainerExtractToDir(r.Body)
        "ContainerDelete": N,
        # image router: image_routes.go
        "ImageList": N,
        "ImageSearch": N,
        "ImageGetAll": N,
        "ImageGet": N,
        "ImageHistory": N,
        "ImageInspect": N,
        "ImageAttestations": N,
        "ImageLoad": S,  # postImagesLoad: LoadImage(r.Body)
        "ImageCreate": S,  # postImagesCreate: ImportImage(..., r.Body) when fromSrc=-
        # postImagesPush (20.10): without X-Registry-Auth, the body is the AuthConfig
        "ImagePush": J,
        "ImageTag": N,
        "ImagePrune": N,
        "ImageDelete": N,
        # system router: system_routes.go postAuth (json.NewDecoder)
        "SystemOptions": N,
        "SystemPing": N,
        "SystemPingHead": N,
        "SystemEvents": N,
        "SystemInfo": N,
        "SystemVersion": N,
        "SystemDataUsage": N,
        "SystemAuth": J,
        # volume router: volume_routes.go postVolumesCreate (CheckForJSON), putVolumesUpdate
        "VolumeList": N,
        "VolumeInspect": N,
        "VolumeCreate": J,
        "VolumePrune": N,
        "VolumeUpdate": J,
        "VolumeDelete": N,
        # build router: build_routes.go postBuild reads the context from r.Body
        "ImageBuild": S,
        "BuildPrune": N,
        "BuildCancel": N,
        # session router (an h2c upgrade: the stream after the head is not a body)
        "Session": N,
        # swarm router: cluster_routes.go, every write decodes JSON
        "SwarmInit": J,
        "SwarmJoin": J,
        "SwarmLeave": N,
        "SwarmInspect": N,
        "SwarmUnlockkey": N,
        "SwarmUpdate": J,
        "SwarmUnlock": J,
        "ServiceList": N,
        "ServiceInspect": N,
        "ServiceCreate": J,
        "ServiceUpdate": J,
        "ServiceDelete": N,
        "ServiceLogs": N,
        "NodeList": N,
        "NodeInspect": N,
        "NodeDelete": N,
        "NodeUpdate": J,
        "TaskList": N,
        "TaskInspect": N,
        "TaskLogs": N,
        "SecretList": N,
        "SecretCreate": J,
        "SecretDelete": N,
        "SecretInspect": N,
        "SecretUpdate": J,
        "ConfigList": N,
        "ConfigCreate": J,
        "ConfigDelete": N,
        "ConfigInspect": N,
        "ConfigUpdate": J,
        # plugin router: plugin_routes.go pullPlugin/upgradePlugin (privileges), setPlugin
        # (args), createPlugin (the rootfs and config tar)
        "PluginList": N,
        "PluginInspect": N,
        "GetPluginPrivileges": N,
        "PluginDelete": N,
        "PluginEnable": N,
        "PluginDisable": N,
        "PluginPull": J,
        "PluginPush": N,
        "PluginUpgrade": J,
        "PluginSet": J,
        "PluginCreate": S,
        # distribution, grpc (h2c upgrade), network (network_routes.go: CheckForJSON/ReadJSON)
        "DistributionInspect": N,
        "GrpcSession": N,
        "NetworkList": N,
        "NetworkInspect": N,
        "NetworkCreate": J,
        "NetworkConnect": J,
        "NetworkDisconnect": J,
        "NetworkPrune": N,
        "NetworkDelete": N,
        # debug router
        "DebugVars": N,
        "DebugPprofIndex": N,
        "DebugPprofCmdline": N,
        "DebugPprofProfile": N,
        "DebugPprofSymbol": N,
        "DebugPprofTrace": N,
        "DebugPprofNamed": N,
    }
)
# A request the route table cannot place is refused by every policy that does not allow
# unknown requests; one that is allowed (`unknown: true`) is relayed as it is, but never with
# a form body.
UNKNOWN_KIND = BodyKind.STREAM

# The largest body the gateway reads (and drops) on an operation whose handler reads none.
# dockerode's option bodies are a few hundred bytes; prune filters a few kilobytes.
IGNORED_BODY_LIMIT = 64 * 1024

FORM_TYPES = frozenset({"multipart/form-data", "application/x-www-form-urlencoded"})
JSON_TYPE = "application/json"
# encoding/json's whitespace (scanner.go isSpace).
_JSON_SPACE = b" \t\r\n"


def _refused(status: int, message: str) -> Refusal:
    """400 malformed, 403 denied, 413 too large, 415 wrong media type."""
    return Refusal(status, message, "content", "body shape")


def expected_kind(operation: str) -> BodyKind:
    return EXPECTED.get(operation, UNKNOWN_KIND)


def media_type(values: list[bytes]) -> str | Refusal | None:
    """The media type of a request's Content-Type fields as Go's `mime.ParseMediaType` reads
    it (None: no field, or an empty one), or a refusal for a field Go could read otherwise."""
    if not values:
        return None
    if len(values) > 1:
        return _refused(400, "dockgate: more than one Content-Type field")
    raw = values[0]
    if not raw.isascii():
        return _refused(400, "dockgate: a Content-Type with non-ASCII bytes")
    media = raw.split(b";", 1)[0].strip(b" \t").lower().decode("ascii")
    return media or None


def judge_head(
    operation: str, content_types: list[bytes], has_body: bool, length: int | None
) -> Refusal | None:
    """Refusal for what the head says the body is, or None. `length` is the Content-Length
    (None when chunked); a request without a body passes whatever its Content-Type."""
    if not has_body:
        return None
    media = media_type(content_types)
    if isinstance(media, Refusal):
        return media
    if media in FORM_TYPES:
        # The existing message (and 400) kept: clients and tests match on it.
        return _refused(400, "dockgate: form-encoded bodies are not accepted")
    kind = expected_kind(operation)
    if kind is BodyKind.STREAM:
        return None
    if media is not None and media != JSON_TYPE:
        what = "a JSON body" if kind is BodyKind.JSON else "no body (or JSON)"
        return _refused(
            415, f"dockgate: {operation} takes {what}, not a {media} body (Content-Type)"
        )
    if kind is not BodyKind.JSON and length is not None and length > IGNORED_BODY_LIMIT:
        return _refused(413, too_large(operation))
    return None


def too_large(operation: str) -> str:
    return f"dockgate: {operation} takes no body; one over {IGNORED_BODY_LIMIT} bytes is refused"


def drops_body(operation: str) -> bool:
    """Whether a body sent with `operation` is read by the gateway and not forwarded."""
    return expected_kind(operation) in (BodyKind.NONE, BodyKind.EMPTY)


def ignored_body_refusal(operation: str, body: bytes) -> Refusal | None:
    """For a body read whole on an operation whose handler reads none: refused when some API
    version's handler would read it (`EMPTY`) and it is more than an empty JSON value."""
    if expected_kind(operation) is not BodyKind.EMPTY or is_empty_json(body):
        return None
    return _refused(
        403,
        f"dockgate: {operation} with a request body is refused (below API 1.24 the daemon "
        "reads it as a HostConfig that replaces the container's)",
    )


def is_empty_json(body: bytes) -> bool:
    """Nothing, `null`, or `{}` (JSON whitespace anywhere around and inside)."""
    text = body.strip(_JSON_SPACE)
    if text in (b"", b"null"):
        return True
    return text[:1] == b"{" and text[-1:] == b"}" and not text[1:-1].strip(_JSON_SPACE)
