"""Every read that can show an environment, mounts or labels, and what `redact:` does to it.

This is data: `redact.py` rewrites the answers marked REWRITTEN, `relay/steps.py` refuses the
requests marked REFUSED (through `redact.query_problem`), and docs/policy.md lists the rest as not
covered. tests/body/test_exposure.py walks both Engine API specs and fails when an operation whose
answer holds `Env`, `Mounts`, `Binds`, `Labels`, `Volumes`, `Mountpoint`, `CreatedBy` or
`ProcessConfig` is in neither this table nor `SHOWS_NONE`, so an operation of a newer API cannot
pass unconsidered.

What `mounts` hides is what a container or volume takes from the host: bind sources, mount
lists, volume driver options (`device=/host/path`). The daemon's own data-root paths
(`GraphDriver.Data`, `ResolvConfPath`, a volume's `Mountpoint`) are not covered: they say
where Docker keeps its files, not what a caller mounted.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Treatment(Enum):
    REWRITTEN = "rewritten"  # the answer is read whole and the fields removed
    REFUSED = "refused"  # the request is refused (403) where the area is redacted
    NOT_COVERED = "not covered"  # documented: deny the operation where it matters


ENV, MOUNTS, LABELS = "env", "mounts", "labels"


@dataclass(frozen=True, slots=True)
class Exposure:
    area: str  # ENV, MOUNTS or LABELS: the `redact:` key
    treatment: Treatment
    fields: str  # where the answer shows it (or, when refused, which requests are)
    # Query filters that would tell a hidden value by what they match: refused (403).
    filters: tuple[str, ...] = ()


def _rewritten(area: str, fields: str, *filters: str) -> Exposure:
    return Exposure(area, Treatment.REWRITTEN, fields, filters)


_CONTAINER = (
    # moby daemon/inspect.go: ContainerInspectCurrent, containerInspect120 (v1p20: Mounts) and
    # containerInspectPre120 (v1p19: Volumes, VolumesRW map container paths to host paths).
    _rewritten(ENV, "Config.Env (values; a linked container's env shows up there as ALIAS_ENV_*)"),
    # Remote log drivers' credentials (splunk-token, loki-url, ...): values, keys kept.
    _rewritten(ENV, "HostConfig.LogConfig.Config (values)"),
    _rewritten(MOUNTS, "Mounts, HostConfig.Binds, HostConfig.Mounts, Volumes, VolumesRW (v1.19)"),
    _rewritten(LABELS, "Config.Labels"),
)
_CONTAINER_SUMMARY = (
    _rewritten(MOUNTS, "Mounts", "volume"),  # moby daemon/list.go: volume= matches sources
    _rewritten(LABELS, "Labels", "label"),
)
_CONTAINER_SPEC = (
    _rewritten(ENV, "Spec(.TaskTemplate).ContainerSpec.Env (Spec and PreviousSpec)"),
    _rewritten(ENV, "Spec(.TaskTemplate).LogDriver.Options (values)"),
    _rewritten(MOUNTS, "ContainerSpec.Mounts"),
    _rewritten(LABELS, "Spec.Labels, ContainerSpec.Labels, Labels", "label"),
)
_SPEC_LABELS = (_rewritten(LABELS, "Spec.Labels", "label"),)
_VOLUME = (
    _rewritten(MOUNTS, "Options (device= is a host path for bind-like local volumes)"),
    _rewritten(LABELS, "Labels", "label"),
)
_PLUGIN = (
    _rewritten(ENV, "Settings.Env, Config.Env[].Value"),
    _rewritten(MOUNTS, "Settings.Mounts, Config.Mounts"),
)
_OUTPUT = "the workload's own output or files: nothing to rewrite"
# details=1 prefixes each line with the values of the variables and labels the container's
# log options name (--log-opt env=,labels=,env-regex=; moby daemon/logger/loginfo.go
# ExtraAttributes): refused by redact.query_problem where either is redacted.
_DETAILS = "details= (a truthy value, as httputils.BoolValue reads it)"
_LOGS = (
    Exposure(ENV, Treatment.NOT_COVERED, _OUTPUT),
    Exposure(ENV, Treatment.REFUSED, _DETAILS),
    Exposure(LABELS, Treatment.REFUSED, _DETAILS),
)

EXPOSURES: dict[str, tuple[Exposure, ...]] = {
    "ContainerInspect": _CONTAINER,
    "ContainerList": _CONTAINER_SUMMARY,
    # moby daemon/top_unix.go runs the host's ps with the caller's ps_args (psargs.py).
    "ContainerTop": (
        Exposure(ENV, Treatment.REFUSED, "ps_args that may print environments (BSD `e`)"),
    ),
    "ContainerLogs": _LOGS,
    "ContainerAttach": (Exposure(ENV, Treatment.NOT_COVERED, _OUTPUT),),
    "ContainerAttachWebsocket": (Exposure(ENV, Treatment.NOT_COVERED, _OUTPUT),),
    "ContainerExport": (Exposure(ENV, Treatment.NOT_COVERED, _OUTPUT),),
    "ContainerArchive": (Exposure(ENV, Treatment.NOT_COVERED, _OUTPUT),),
    "ExecStart": (Exposure(ENV, Treatment.NOT_COVERED, _OUTPUT + " (`env` prints it)"),),
    "ServiceLogs": _LOGS,
    "TaskLogs": _LOGS,
    "ImageInspect": (
        # A committed container's Config (its Env and Labels) becomes the image's Config and
        # ContainerConfig (moby daemon/commit.go merges them): a container secret lands here.
        _rewritten(ENV, "Config.Env, ContainerConfig.Env"),
        _rewritten(LABELS, "Config.Labels, ContainerConfig.Labels"),
    ),
    "ImageList": (_rewritten(LABELS, "Labels", "label"),),
    "ImageHistory": (
        Exposure(
            ENV,
            Treatment.NOT_COVERED,
            "CreatedBy: the Dockerfile's ENV lines and RUN steps with their build args",
        ),
    ),
    "ImageGet": (Exposure(ENV, Treatment.NOT_COVERED, "the image's config file, Env included"),),
    "ImageGetAll": (
        Exposure(ENV, Treatment.NOT_COVERED, "the images' config files, Env included"),
    ),
    "SystemDataUsage": (
        _rewritten(MOUNTS, "Containers[].Mounts, Volumes[].Options"),
        _rewritten(LABELS, "Containers[].Labels, Images[].Labels, Volumes[].Labels"),
    ),
    "SystemInfo": (_rewritten(LABELS, "Labels (the engine's)"),),
    "SystemEvents": (
        _rewritten(MOUNTS, "volume mount events' destination, propagation, read/write"),
        _rewritten(LABELS, "container and image events' label attributes", "label"),
    ),
    "VolumeList": _VOLUME,
    "VolumeInspect": _VOLUME,
    "VolumeCreate": _VOLUME,  # an existing volume's name answers with that volume
    "NetworkList": (_rewritten(LABELS, "Labels", "label"),),
    "NetworkInspect": (_rewritten(LABELS, "Labels"),),
    "PluginList": _PLUGIN,
    "PluginInspect": _PLUGIN,
    "PluginDelete": _PLUGIN,
    "NodeList": (_rewritten(LABELS, "Spec.Labels, Description.Engine.Labels", "label"),),
    "NodeInspect": (_rewritten(LABELS, "Spec.Labels, Description.Engine.Labels"),),
    "SwarmInspect": (_rewritten(LABELS, "Spec.Labels"),),
    "ServiceList": _CONTAINER_SPEC,
    "ServiceInspect": _CONTAINER_SPEC,
    "TaskList": _CONTAINER_SPEC,
    "TaskInspect": _CONTAINER_SPEC,
    "SecretList": _SPEC_LABELS,
    "SecretInspect": _SPEC_LABELS,
    "ConfigList": _SPEC_LABELS,
    "ConfigInspect": _SPEC_LABELS,
}

# Reads whose answer has one of the walked field names but shows no environment, mount or
# label of a workload: why they need nothing.
SHOWS_NONE: dict[str, str] = {
    "ExecInspect": "ProcessConfig is the command line (entrypoint, arguments), not its Env",
    "ContainerChanges": "paths changed in the container's own layer; mounted volumes excluded",
}


def rewritten_areas(operation: str) -> frozenset[str]:
    """The areas whose fields `operation`'s answers lose when redacted."""
    return _REWRITTEN.get(operation, frozenset())


def refused_filters(operation: str, area: str) -> tuple[str, ...]:
    """The filter keys `operation` refuses where `area` is redacted."""
    return _FILTERS.get((operation, area), ())


_REWRITTEN = {
    operation: frozenset(e.area for e in exposures if e.treatment is Treatment.REWRITTEN)
    for operation, exposures in EXPOSURES.items()
}
_REWRITTEN = {operation: areas for operation, areas in _REWRITTEN.items() if areas}
_FILTERS = {
    (operation, e.area): e.filters
    for operation, exposures in EXPOSURES.items()
    for e in exposures
    if e.filters
}
