"""What every request may carry: one classification of the body fields and query parameters
of the operations that write, and the walk that holds a request to it.

Guardrails (guardrails.py, workload.py) read the fields they judge. This table is the net
around them: every field and query parameter the daemon reads is listed here as

- *inert*: any value (the daemon does nothing with it that reaches the host),
- *judged* by a named guardrail: any value here; the guardrail's reader decides,
- *refused*: only its zero value (absent, null, false, 0, "", [], {}) or a listed value passes;

and a field or parameter that is NOT listed passes only with a zero value, so a field of a
newer API version, or one dockgate never heard of, cannot slip through with a value.

Bodies are walked as Go's encoding/json decodes them (gojson): keys fold case-insensitively
to a struct's fields, duplicate keys are each applied, null is a zero value. Map keys (Labels,
DriverOpts, ...) are free. A list of objects given twice for one field is refused: Go decodes
the second list into the first one's elements, so fields of the first survive where the
gateway (or the reader) saw only the second (golang/go#21092).

Query strings are read as Go's url.ParseQuery does (dockgate.http.query): keys are exact
(r.FormValue is case-sensitive), a pair with ';' or a bad escape is dropped, and every value
of a repeated key is judged (the daemon reads the first, or all of them for list options).

Fields the OpenAPI specs omit but the daemon reads carry `source`: the moby file that reads
them (tests/body/test_field_classification.py checks that every other entry is in a spec).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TypeAlias, TypeVar

from dockgate.body.gojson import GoObject, fold_key

# --------------------------------------------------------------------------------------------
# The node types of the table.


@dataclass(frozen=True, slots=True)
class Leaf:
    kind: str  # "inert", "judged" or "refused"
    guardrail: str = ""  # judged: the guardrail whose reader decides
    allowed: tuple[object, ...] = ()  # refused: values that pass besides the zero value
    source: str = ""  # set for fields the specs do not list: the moby code that reads them


@dataclass(frozen=True, slots=True)
class Obj:
    """A Go struct: its fields by name (matched as Go does, case-insensitively)."""

    fields: Mapping[str, Node]
    source: str = ""
    index: Mapping[str, tuple[str, Node]] = field(default_factory=dict, compare=False)
    # Folded names of the fields that take any value (inert or judged leaves): skipped fast.
    skip: frozenset[str] = field(default=frozenset(), compare=False)


@dataclass(frozen=True, slots=True)
class ListOf:
    item: Node
    source: str = ""


@dataclass(frozen=True, slots=True)
class MapOf:
    """A Go map with free keys (exact, not folded); each value is `value`."""

    value: Node
    source: str = ""

    @property
    def skip(self) -> bool:
        """Whether every value passes (a map of inert or judged values)."""
        return isinstance(self.value, Leaf) and self.value.kind != "refused"


Node: TypeAlias = Leaf | Obj | ListOf | MapOf

_N = TypeVar("_N", Leaf, Obj, ListOf, MapOf)

INERT = Leaf("inert")
REFUSED = Leaf("refused")


def judged(guardrail: str) -> Leaf:
    return Leaf("judged", guardrail)


def only(*allowed: object) -> Leaf:
    """Refused unless zero or one of `allowed` (e.g. a driver named as the default)."""
    return Leaf("refused", allowed=allowed)


def obj(fields: Mapping[str, Node], source: str = "") -> Obj:
    index = {name.lower(): (name, node) for name, node in fields.items()}
    skip = frozenset(
        folded
        for folded, (_, node) in index.items()
        if isinstance(node, Leaf) and node.kind != "refused"
    )
    return Obj(dict(fields), source, index, skip)


def legacy(node: _N, source: str) -> _N:
    """A field the specs omit, with the moby source that reads it."""
    return replace(node, source=source)


I = INERT  # noqa: E741 (the table reads better with one-letter kinds)
R = REFUSED

# --------------------------------------------------------------------------------------------
# Bodies.

# Log drivers that write where the daemon keeps logs; the others (syslog, gelf, fluentd,
# splunk, awslogs, ...) make the daemon connect to an address the caller names, loopback
# included: refused like a build's remote URL. moby daemon/logger/*.
_LOG_DRIVERS = ("json-file", "local", "journald", "none")
LOG_CONFIG = obj({"Type": only(*_LOG_DRIVERS), "Config": MapOf(I)})

# A block device's host path, stat'ed by the daemon at start (its error tells whether the
# path exists): judged as a host device by workload._blkio_devices.
THROTTLE = ListOf(obj({"Path": judged("devices"), "Rate": I}))
WEIGHT_DEVICE = ListOf(obj({"Path": judged("devices"), "Weight": I}))
ULIMITS = ListOf(obj({"Name": I, "Soft": I, "Hard": I}))
DEVICES = ListOf(
    obj(
        {
            "PathOnHost": judged("devices"),
            "PathInContainer": judged("devices"),
            "CgroupPermissions": judged("devices"),
        }
    )
)
DEVICE_REQUESTS = ListOf(
    obj(
        {
            "Driver": judged("devices"),
            "Count": judged("devices"),
            "DeviceIDs": judged("devices"),
            "Capabilities": judged("devices"),
            "Options": MapOf(judged("devices")),
        }
    )
)
RESTART_POLICY = obj({"Name": I, "MaximumRetryCount": I})

# api/types/container/host_config.go Resources (embedded in HostConfig and UpdateConfig).
RESOURCES: dict[str, Node] = {
    "CpuShares": I,
    "Memory": judged("resources"),
    "NanoCpus": judged("resources"),
    # A cgroup of the caller's choice: out of the limits the daemon sets (and into another
    # container's). Not judged by a guardrail: refused.
    "CgroupParent": R,
    "BlkioWeight": I,
    "BlkioWeightDevice": WEIGHT_DEVICE,
    "BlkioDeviceReadBps": THROTTLE,
    "BlkioDeviceWriteBps": THROTTLE,
    "BlkioDeviceReadIOps": THROTTLE,
    "BlkioDeviceWriteIOps": THROTTLE,
    "CpuPeriod": judged("resources"),
    "CpuQuota": judged("resources"),
    "CpuRealtimePeriod": I,
    "CpuRealtimeRuntime": I,
    "CpusetCpus": I,
    "CpusetMems": I,
    "Devices": DEVICES,
    "DeviceCgroupRules": judged("devices"),
    "DeviceRequests": DEVICE_REQUESTS,
    "KernelMemory": I,
    "KernelMemoryTCP": I,
    "MemoryReservation": I,
    "MemorySwap": I,
    "MemorySwappiness": I,
    "OomKillDisable": I,
    "PidsLimit": I,
    "Ulimits": ULIMITS,
    "CpuCount": I,
    "CpuPercent": I,
    "IOMaximumIOps": I,
    "IOMaximumBandwidth": I,
}

# api/types/mount/mount.go Mount, judged by workload._mount_paths (host_paths, volume_drivers).
MOUNT = obj(
    {
        "Type": judged("host_paths"),
        "Source": judged("host_paths"),
        "Target": I,
        "ReadOnly": judged("host_paths"),
        "Consistency": I,
        "BindOptions": obj(
            {
                # Shared propagation carries mounts made in the container back to the host
                # (with a capability that lets it mount): only private and slave ones.
                "Propagation": only("private", "rprivate", "slave", "rslave"),
                "NonRecursive": I,
                "CreateMountpoint": judged("host_paths"),
                # Leaves the submounts of a read-only bind writable (API 1.44+): a read-only
                # host path rule would not hold. Not judged: refused.
                "ReadOnlyNonRecursive": R,
                "ReadOnlyForceRecursive": I,
            }
        ),
        "VolumeOptions": obj(
            {
                "NoCopy": I,
                "Labels": MapOf(I),
                "DriverConfig": obj(
                    {"Name": judged("volume_drivers"), "Options": MapOf(judged("host_paths"))}
                ),
                "Subpath": I,
            }
        ),
        "ImageOptions": obj({"Subpath": I}),
        # SizeBytes and Mode are numbers the daemon formats; Options (API 1.46+) are option
        # words like HostConfig.Tmpfs's, judged by body/tmpfs.py.
        "TmpfsOptions": obj({"SizeBytes": I, "Mode": I, "Options": judged("host_paths")}),
        # Cluster volumes (CSI): not judged.
        "ClusterOptions": legacy(R, "api/types/mount/mount.go ClusterOptions (API 1.42+)"),
    }
)

HOST_CONFIG_FIELDS: dict[str, Node] = {
    "Binds": judged("host_paths"),
    "ContainerIDFile": I,  # written by the client, not the daemon
    "LogConfig": LOG_CONFIG,
    "NetworkMode": judged("namespaces"),
    # A fixed HostPort must lie in the policy's host_ports (body/hostports.py); the address
    # matters not: a bind on 0.0.0.0 also answers the host's loopback.
    "PortBindings": MapOf(ListOf(obj({"HostIp": I, "HostPort": judged("host_ports")}))),
    "RestartPolicy": RESTART_POLICY,
    "AutoRemove": I,
    "VolumeDriver": judged("volume_drivers"),
    "VolumesFrom": judged("host_paths"),
    "CapAdd": judged("capabilities"),
    "CapDrop": I,
    "CgroupnsMode": judged("namespaces"),
    "Dns": I,
    "DnsOptions": I,
    "DnsSearch": I,
    "ExtraHosts": I,
    "GroupAdd": I,
    "IpcMode": judged("namespaces"),
    # CgroupSpec ("container:<id>"): another container's cgroup; no reader judges it.
    "Cgroup": R,
    "Links": I,
    "OomScoreAdj": I,
    "PidMode": judged("namespaces"),
    "Privileged": judged("privileged"),
    "PublishAllPorts": I,
    "ReadonlyRootfs": I,
    "SecurityOpt": judged("security_overrides"),
    # Storage-driver options (overlay2 size, ...): not judged.
    "StorageOpt": MapOf(R),
    # Target -> mount option words ("remount" would make sysfs or a read-only bind
    # writable): judged by body/tmpfs.py.
    "Tmpfs": MapOf(judged("host_paths")),
    "UTSMode": judged("namespaces"),
    "UsernsMode": judged("namespaces"),
    "ShmSize": I,
    "Sysctls": MapOf(judged("sysctls")),
    "Runtime": judged("runtimes"),
    "ConsoleSize": I,
    "Isolation": I,  # Linux daemons accept only "" and "default"
    **RESOURCES,
    "Mounts": ListOf(MOUNT),
    "MaskedPaths": judged("security_overrides"),
    "ReadonlyPaths": judged("security_overrides"),
    "Init": I,
    # OCI annotations reach the runtime, and some runtimes act on them: not judged.
    "Annotations": MapOf(R),
    "Capabilities": legacy(
        judged("capabilities"),
        "api/types/container/host_config.go HostConfig.Capabilities (API 1.40, moby 19.03)",
    ),
}
HOST_CONFIG = obj(HOST_CONFIG_FIELDS)

ENDPOINT_SETTINGS = obj(
    {
        # A static address must lie in the network's pool (libnetwork ipam/allocator.go
        # RequestAddress: ErrIPOutOfRange), whose subnet is the operator's or judged by
        # network_subnets. Link-local IPs are added to the interface unchecked (v20.10
        # daemon/network.go buildCreateEndpointOptions: any address), e.g. another
        # container's or the gateway's: not judged, refused.
        "IPAMConfig": obj({"IPv4Address": I, "IPv6Address": I, "LinkLocalIPs": R}),
        "Links": I,
        "Aliases": I,
        "MacAddress": I,
        # Endpoint driver options go to the network driver: not judged.
        "DriverOpts": MapOf(R),
        "GwPriority": I,
        "NetworkID": I,
        "EndpointID": I,
        "Gateway": I,
        "IPAddress": I,
        "IPPrefixLen": I,
        "IPv6Gateway": I,
        "GlobalIPv6Address": I,
        "GlobalIPv6PrefixLen": I,
        "DNSNames": I,
    }
)
NETWORKING_CONFIG = obj({"EndpointsConfig": MapOf(ENDPOINT_SETTINGS)})

# container.HealthConfig: a command run inside the container, and its timings.
HEALTHCHECK = obj(
    {
        "Test": I,
        "Interval": I,
        "Timeout": I,
        "Retries": I,
        "StartPeriod": I,
        "StartInterval": I,
    }
)

# api/types/container/config.go Config.
CONFIG_FIELDS: dict[str, Node] = {
    "Hostname": I,
    "Domainname": I,
    "User": I,
    "AttachStdin": I,
    "AttachStdout": I,
    "AttachStderr": I,
    "ExposedPorts": MapOf(I),
    "Tty": I,
    "OpenStdin": I,
    "StdinOnce": I,
    "Env": I,
    "Cmd": I,
    "Healthcheck": HEALTHCHECK,
    "ArgsEscaped": I,
    "Image": judged("images"),
    "Volumes": MapOf(I),  # anonymous volumes of the default driver
    "WorkingDir": I,
    "Entrypoint": I,
    "NetworkDisabled": I,
    "MacAddress": I,
    "OnBuild": I,
    "Labels": MapOf(judged("labels")),
    "StopSignal": I,
    "StopTimeout": I,
    "Shell": I,
}

_WRAPPER = "runconfig/config_unix.go ContainerConfigWrapper"
# A create body (runconfig ContainerConfigWrapper): a Config, the HostConfig, the networking
# config, and for backward compatibility (API < 1.20 clients) every HostConfig field at the top
# level plus `Cpuset` (getHostConfig uses them when there is no inner HostConfig, and copies
# Memory, MemorySwap, CpuShares, CpusetCpus and VolumeDriver from them when it leaves them
# zero). The top-level fields are judged like the inner ones.
_LEGACY_TOP = {
    name: replace(node, source=f"{_WRAPPER} (embedded *container.HostConfig)")
    for name, node in HOST_CONFIG_FIELDS.items()
}
CREATE_BODY = obj(
    {
        **_LEGACY_TOP,
        **CONFIG_FIELDS,
        "HostConfig": HOST_CONFIG,
        "NetworkingConfig": NETWORKING_CONFIG,
        "Cpuset": legacy(I, f"{_WRAPPER} Cpuset"),
    }
)

_COMMIT = (
    "api/server/router/image/image_routes.go postCommit: runconfig DecodeConfig reads a create "
    "body; only its Config is used"
)
# The commit body: a create body, whose Config is merged into the committed image's config; its
# host and networking parts are decoded (and must decode) but not used. Judged as a create's.
COMMIT_BODY = obj(
    {
        **{name: replace(node, source=_COMMIT) for name, node in CREATE_BODY.fields.items()},
        **CONFIG_FIELDS,
    }
)

UPDATE_BODY = obj(
    {
        **RESOURCES,
        # The 20.10 daemon's update does not apply these (daemon/update_linux.go), and the update
        # reader does not judge them: refused rather than trusted to stay ignored.
        "DeviceCgroupRules": R,
        "DeviceRequests": ListOf(R),
        "RestartPolicy": RESTART_POLICY,
        # The specs list it under Resources; Go's UpdateConfig has no Init: ignored.
        "Init": I,
    }
)

EXEC_BODY = obj(
    {
        "AttachStdin": I,
        "AttachStdout": I,
        "AttachStderr": I,
        "ConsoleSize": I,
        "DetachKeys": I,
        "Tty": I,
        "Env": I,
        "Cmd": I,
        "Privileged": judged("privileged"),
        "User": judged("exec_user"),
        "WorkingDir": I,
        # api/types/configs.go ExecConfig.Detach: the CLI sends it; the daemon ignores it.
        "Detach": legacy(I, "api/types/configs.go ExecConfig.Detach"),
        # docker-py (api/exec_api.py exec_create) sends the container's ID; ExecConfig has no
        # such field, so the daemon ignores it.
        "Container": legacy(I, "docker-py exec_create; not in api/types/configs.go ExecConfig"),
    }
)
EXEC_START_BODY = obj({"Detach": I, "Tty": I, "ConsoleSize": I})

_FILE = obj({"Name": I, "UID": I, "GID": I, "Mode": I})
_PLATFORM = obj({"Architecture": I, "OS": I})
_SWARM_NETWORK = ListOf(obj({"Target": judged("namespaces"), "Aliases": I, "DriverOpts": MapOf(R)}))
_UPDATE_CONFIG = obj(
    {
        "Parallelism": I,
        "Delay": I,
        "FailureAction": I,
        "Monitor": I,
        "MaxFailureRatio": I,
        "Order": I,
    }
)
_SERVICE_LIMITS = obj(
    {"MemoryBytes": judged("resources"), "NanoCPUs": judged("resources"), "Pids": I}
)
_GENERIC = ListOf(
    obj(
        {
            "NamedResourceSpec": obj({"Kind": I, "Value": I}),
            "DiscreteResourceSpec": obj({"Kind": I, "Value": I}),
        }
    )
)
# api/types/swarm/container.go ContainerSpec, judged by workload.service_spec.
CONTAINER_SPEC = obj(
    {
        "Image": judged("images"),
        "Labels": MapOf(judged("labels")),
        "Command": I,
        "Args": I,
        "Hostname": I,
        "Env": I,
        "Dir": I,
        "User": I,
        "Groups": I,
        "Privileges": obj(
            {
                # Windows only (gMSA credential specs read from the host's registry or files).
                "CredentialSpec": obj({"Config": R, "File": R, "Registry": R}),
                "SELinuxContext": obj(
                    {
                        "Disable": judged("security_overrides"),
                        "User": judged("security_overrides"),
                        "Role": judged("security_overrides"),
                        "Type": judged("security_overrides"),
                        "Level": judged("security_overrides"),
                    }
                ),
                "Seccomp": obj(
                    {"Mode": judged("security_overrides"), "Profile": judged("security_overrides")}
                ),
                "AppArmor": obj({"Mode": judged("security_overrides")}),
                "NoNewPrivileges": judged("security_overrides"),
            }
        ),
        "Init": I,
        "StopSignal": I,
        "TTY": I,
        "OpenStdin": I,
        "ReadOnly": I,
        "Mounts": ListOf(MOUNT),
        "StopGracePeriod": I,
        "HealthCheck": HEALTHCHECK,
        "Hosts": I,
        "DNSConfig": obj({"Nameservers": I, "Search": I, "Options": I}),
        "Secrets": ListOf(obj({"File": _FILE, "SecretID": I, "SecretName": I})),
        "Configs": ListOf(obj({"File": _FILE, "Runtime": obj({}), "ConfigID": I, "ConfigName": I})),
        "Isolation": I,
        "Sysctls": MapOf(judged("sysctls")),
        "CapabilityAdd": judged("capabilities"),
        "CapabilityDrop": I,
        "Ulimits": ULIMITS,
        "OomScoreAdj": I,
    }
)
SERVICE_BODY = obj(
    {
        "Name": I,
        "Labels": MapOf(judged("labels")),
        "TaskTemplate": obj(
            {
                # A plugin service installs a plugin on every node, with its privileges.
                "PluginSpec": obj(
                    {
                        "Name": R,
                        "Remote": R,
                        "Disabled": R,
                        "PluginPrivilege": ListOf(obj({"Name": R, "Description": R, "Value": R})),
                    }
                ),
                "ContainerSpec": CONTAINER_SPEC,
                # Internal to swarm's network attachments: not for callers.
                "NetworkAttachmentSpec": obj({"ContainerID": R}),
                "Resources": obj(
                    {
                        "Limits": _SERVICE_LIMITS,
                        "Reservations": obj(
                            {"NanoCPUs": I, "MemoryBytes": I, "GenericResources": _GENERIC}
                        ),
                        "SwapBytes": I,
                        "MemorySwappiness": I,
                    }
                ),
                "RestartPolicy": obj({"Condition": I, "Delay": I, "MaxAttempts": I, "Window": I}),
                "Placement": obj(
                    {
                        "Constraints": I,
                        "Preferences": ListOf(obj({"Spread": obj({"SpreadDescriptor": I})})),
                        "MaxReplicas": I,
                        "Platforms": ListOf(_PLATFORM),
                    }
                ),
                "ForceUpdate": I,
                "Runtime": only("container"),
                "Networks": _SWARM_NETWORK,
                "LogDriver": obj({"Name": only(*_LOG_DRIVERS), "Options": MapOf(I)}),
            }
        ),
        "Mode": obj(
            {
                "Replicated": obj({"Replicas": I}),
                "Global": obj({}),
                "ReplicatedJob": obj({"MaxConcurrent": I, "TotalCompletions": I}),
                "GlobalJob": obj({}),
            }
        ),
        "UpdateConfig": _UPDATE_CONFIG,
        "RollbackConfig": _UPDATE_CONFIG,
        "Networks": _SWARM_NETWORK,
        "EndpointSpec": obj(
            {
                "Mode": I,
                "Ports": ListOf(
                    obj(
                        {
                            "Name": I,
                            "Protocol": I,
                            "TargetPort": I,
                            "PublishedPort": judged("host_ports"),
                            "PublishMode": I,
                        }
                    )
                ),
            }
        ),
    }
)

# Cluster volumes (CSI, API 1.42+): not judged; the 20.10 daemon does not know them.
_CLUSTER_VOLUME_SPEC = MapOf(R)
VOLUME_BODY = obj(
    {
        "Name": I,
        "Driver": judged("volume_drivers"),
        "DriverOpts": MapOf(judged("host_paths")),
        "Labels": MapOf(judged("labels")),
        "ClusterVolumeSpec": obj({"Group": R, "AccessMode": _CLUSTER_VOLUME_SPEC}),
    }
)
VOLUME_UPDATE_BODY = obj({"Spec": obj({"Group": R, "AccessMode": _CLUSTER_VOLUME_SPEC})})

# api/types/types.go NetworkCreateRequest, judged by guardrails._network (network_drivers).
NETWORK_CREATE_BODY = obj(
    {
        "Name": I,
        "CheckDuplicate": I,
        "Driver": judged("network_drivers"),
        "Scope": I,
        "EnableIPv4": I,
        "EnableIPv6": I,
        "IPAM": obj(
            {
                # An IPAM plugin: only the built-in allocator.
                "Driver": only("default"),
                # Ranges and addresses: judged by body/subnets.py (a bridge's subnet is a
                # route on the host).
                "Config": ListOf(
                    obj(
                        {
                            "Subnet": judged("network_subnets"),
                            "IPRange": judged("network_subnets"),
                            "Gateway": judged("network_subnets"),
                            "AuxiliaryAddresses": MapOf(judged("network_subnets")),
                        }
                    )
                ),
                "Options": MapOf(I),
            }
        ),
        "Internal": I,
        "Attachable": I,
        # The swarm's routing-mesh network: the cluster's, not a caller's.
        "Ingress": R,
        # A config-only network holds options for another network to take (ConfigFrom): the
        # options would come from a network the gateway does not see.
        "ConfigOnly": R,
        "ConfigFrom": obj({"Network": R}),
        "Options": MapOf(judged("network_drivers")),
        "Labels": MapOf(I),
    }
)
NETWORK_CONNECT_BODY = obj({"Container": I, "EndpointConfig": ENDPOINT_SETTINGS})
NETWORK_DISCONNECT_BODY = obj({"Container": I, "Force": I})

_SECRET_DRIVER = obj({"Name": R, "Options": MapOf(R)})
SECRET_BODY = obj(
    {
        "Name": I,
        "Labels": MapOf(I),
        "Data": I,
        # A secret store plugin, and templates that expand other secrets and configs: not judged.
        "Driver": _SECRET_DRIVER,
        "Templating": _SECRET_DRIVER,
    }
)
CONFIG_BODY = obj({"Name": I, "Labels": MapOf(I), "Data": I, "Templating": _SECRET_DRIVER})
# The node's role and availability are the cluster's: the rules decide who may update nodes.
NODE_BODY = obj({"Name": I, "Labels": MapOf(I), "Role": I, "Availability": I})

# Whole bodies judged by one guardrail (the operation is refused without it, and allowed
# whole with it): the swarm's own configuration, and plugin privileges.
BODIES: dict[str, Node] = {
    "ContainerCreate": CREATE_BODY,
    # runconfig ContainerDecoder.DecodeConfig: the commit body is read as a create body, and
    # only its Config is used (merged into the committed image's config).
    "ImageCommit": COMMIT_BODY,
    "ContainerUpdate": UPDATE_BODY,
    "ContainerExec": EXEC_BODY,
    "ExecStart": EXEC_START_BODY,
    "ServiceCreate": SERVICE_BODY,
    "ServiceUpdate": SERVICE_BODY,
    "VolumeCreate": VOLUME_BODY,
    "VolumeUpdate": VOLUME_UPDATE_BODY,
    "NetworkCreate": NETWORK_CREATE_BODY,
    "NetworkConnect": NETWORK_CONNECT_BODY,
    "NetworkDisconnect": NETWORK_DISCONNECT_BODY,
    "SecretCreate": SECRET_BODY,
    "SecretUpdate": SECRET_BODY,
    "ConfigCreate": CONFIG_BODY,
    "ConfigUpdate": CONFIG_BODY,
    "NodeUpdate": NODE_BODY,
    "SwarmInit": judged("swarm"),
    "SwarmJoin": judged("swarm"),
    "SwarmUpdate": judged("swarm"),
    "SwarmUnlock": obj({"UnlockKey": I}),
    "PluginPull": judged("plugin_privileges"),
    "PluginUpgrade": judged("plugin_privileges"),
    "PluginSet": judged("plugin_privileges"),
    # API < 1.24: a start body is a HostConfig that replaces the container's (20.10 reads it);
    # body/content.py refuses any but an empty one, in every policy.
    "ContainerStart": legacy(
        R, "api/server/router/container/container_routes.go postContainersStart (API < 1.24)"
    ),
    # Experimental daemons only: a checkpoint written to (or restored from) a host directory.
    "CheckpointCreate": legacy(
        obj({"CheckpointID": I, "CheckpointDir": R, "Exit": I}),
        "api/server/router/checkpoint/checkpoint_routes.go postContainerCheckpoint",
    ),
}

# --------------------------------------------------------------------------------------------
# Query parameters, by operation (exact keys, as r.FormValue reads them).

_BUILD = "api/server/router/build/build_routes.go newImageBuildOptions"
# Attach, hijacked or over a WebSocket, reads the same parameters (postContainersAttach,
# wsContainersAttach).
_ATTACH: dict[str, Leaf] = {
    "detachKeys": I,
    "logs": I,
    "stream": I,
    "stdin": I,
    "stdout": I,
    "stderr": I,
}
QUERIES: dict[str, dict[str, Leaf]] = {
    "ContainerCreate": {"name": I, "platform": I},
    "ContainerStart": {
        "detachKeys": I,
        # Restore from a checkpoint, and from a directory of the host's: not judged.
        "checkpoint": legacy(
            R, "api/server/router/container/container_routes.go postContainersStart"
        ),
        "checkpoint-dir": legacy(
            R, "api/server/router/container/container_routes.go postContainersStart"
        ),
    },
    "ContainerStop": {"t": I, "signal": I},
    "ContainerRestart": {"t": I, "signal": I},
    "ContainerKill": {"signal": I},
    "ContainerRename": {"name": I},
    "ContainerResize": {"h": I, "w": I},
    "ContainerAttach": _ATTACH,
    "ContainerAttachWebsocket": _ATTACH,
    "ContainerDelete": {"v": I, "force": I, "link": I},
    "PutContainerArchive": {"path": I, "noOverwriteDirNonDir": I, "copyUIDGID": I},
    "ContainerPrune": {"filters": I},
    "ContainerUpdate": {},
    "ContainerPause": {},
    "ContainerUnpause": {},
    "ContainerExec": {},
    "ExecStart": {},
    "ExecResize": {"h": I, "w": I},
    "ImageBuild": {
        "dockerfile": I,
        "t": I,
        "extrahosts": I,  # /etc/hosts entries of the build's containers
        # The daemon fetches a URL (or clones a git repository) the caller names, loopback
        # included; "client-session" and "upload-request" take the context from the client.
        "remote": judged("fetch_urls"),
        "q": I,
        "nocache": I,
        "cachefrom": I,
        "pull": I,
        "rm": I,
        "forcerm": I,
        # The classic builder's RUN containers get these limits (builder/dockerfile
        # internals.go hostConfigFromOptions): judged against max_memory/max_cpus.
        "memory": judged("resources"),
        "memswap": I,
        "cpushares": I,
        "cpusetcpus": I,
        "cpuperiod": judged("resources"),
        "cpuquota": judged("resources"),
        "buildargs": I,
        "shmsize": I,
        "squash": I,
        "labels": I,
        "networkmode": judged("namespaces"),
        "platform": I,
        "target": I,
        "outputs": I,  # exporters write through the client's session, not the host
        "version": judged("resources"),  # BuildKit (2) ignores the limits above
        "cpusetmems": legacy(I, _BUILD),
        "cgroupparent": legacy(R, _BUILD),
        # Linux daemons refuse any security option on build; refused here too.
        "securityopt": legacy(R, _BUILD),
        "isolation": legacy(I, _BUILD),  # Linux: only "default"
        "ulimits": legacy(I, _BUILD),
        "session": legacy(I, _BUILD),
        "buildid": legacy(I, _BUILD),
    },
    "BuildPrune": {
        "keep-storage": I,
        "reserved-space": I,
        "max-used-space": I,
        "min-free-space": I,
        "all": I,
        "filters": I,
    },
    "BuildCancel": {"id": legacy(I, "api/server/router/build/build_routes.go postCancel")},
    "ImageCreate": {
        "fromImage": I,
        "fromSrc": judged("fetch_urls"),
        "repo": I,
        "tag": I,
        "message": I,
        "changes": judged("image_changes"),
        "platform": I,
    },
    "ImagePush": {"tag": I, "platform": I},
    # A read, but the daemon contacts the registry a term names (registry.ParseSearchIndexInfo):
    # a loopback one is refused like a pull.
    "ImageSearch": {"term": judged("images"), "limit": I, "filters": I},
    "ImageTag": {"repo": I, "tag": I},
    "ImageDelete": {"force": I, "noprune": I, "platforms": I},
    "ImagePrune": {"filters": I},
    "ImageCommit": {
        "container": I,
        "repo": I,
        "tag": I,
        "comment": I,
        "author": I,
        "pause": I,
        "changes": judged("image_changes"),
    },
    "ImageLoad": {"quiet": I, "platform": I},
    "VolumeCreate": {},
    "VolumeUpdate": {"version": I},
    "VolumeDelete": {"force": I},
    "VolumePrune": {"filters": I},
    "NetworkCreate": {},
    "NetworkDelete": {},
    "NetworkConnect": {},
    "NetworkDisconnect": {},
    "NetworkPrune": {"filters": I},
    "PluginPull": {"remote": I, "name": I},
    "PluginDelete": {"force": I},
    "PluginEnable": {"timeout": I},
    "PluginDisable": {"force": I},
    "PluginUpgrade": {"remote": I},
    "PluginCreate": {"name": I},
    "PluginPush": {},
    "PluginSet": {},
    "NodeDelete": {"force": I},
    "NodeUpdate": {"version": I},
    "SwarmInit": {},
    "SwarmJoin": {},
    "SwarmLeave": {"force": I},
    "SwarmUpdate": {
        "version": I,
        "rotateWorkerToken": judged("swarm"),
        "rotateManagerToken": judged("swarm"),
        "rotateManagerUnlockKey": judged("swarm"),
    },
    "SwarmUnlock": {},
    "ServiceCreate": {},
    "ServiceDelete": {},
    # rollback=previous makes the daemon deploy the service's PreviousSpec, which the gateway
    # never judged (api/server/router/swarm/cluster_routes.go updateService).
    "ServiceUpdate": {"version": I, "registryAuthFrom": I, "rollback": R},
    "SecretCreate": {},
    "SecretDelete": {},
    "SecretUpdate": {"version": I},
    "ConfigCreate": {},
    "ConfigDelete": {},
    "ConfigUpdate": {"version": I},
    "Session": {},
    "GrpcSession": {},
    "CheckpointCreate": {},
    "CheckpointDelete": {
        "dir": legacy(R, "api/server/router/checkpoint/checkpoint_routes.go (a host directory)")
    },
}

# Request headers the daemon reads, for the record (the proxy handles Content-Type and the
# hop-by-hop ones; these carry credentials or session ids and reach nothing of the host).
HEADERS: dict[str, dict[str, Leaf]] = {
    "ImageBuild": {"X-Registry-Config": I, "Content-Type": I},
    "ImageCreate": {"X-Registry-Auth": I},
    "ImagePush": {"X-Registry-Auth": I},
    "PluginPull": {"X-Registry-Auth": I},
    "PluginUpgrade": {"X-Registry-Auth": I},
    "PluginPush": {"X-Registry-Auth": I},
    "ServiceCreate": {"X-Registry-Auth": I},
    "ServiceUpdate": {"X-Registry-Auth": I},
    "Session": {
        "X-Docker-Expose-Session-Uuid": I,
        "X-Docker-Expose-Session-Name": I,
        "X-Docker-Expose-Session-Sharedkey": I,
        "X-Docker-Expose-Session-Grpc-Method": I,
    },
}

# --------------------------------------------------------------------------------------------
# The walk.


class FieldError(Exception):
    """What the walk refuses: `status` 400 (a body Go would not decode as the gateway
    judges it) or 403 (a field or parameter that is unknown, or refused, with a value)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def is_zero(value: object) -> bool:
    """Go's zero value as JSON: null, false, 0, "", [], {} or an object of zero values."""
    if value is None or value is False or value == "":
        return True
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value == 0
    if isinstance(value, list):
        return not value
    if isinstance(value, GoObject):
        return all(is_zero(item) for _, item in value.pairs)
    return False


def check_body(operation: str, parsed: object) -> None:
    """Raise FieldError when the parsed body carries what the table does not allow."""
    node = BODIES.get(operation)
    if node is None:
        return
    _walk(node, parsed, "")


def _walk(node: Node, value: object, where: str) -> None:
    if isinstance(node, Leaf):
        if node.kind == "refused" and not is_zero(value) and value not in node.allowed:
            raise FieldError(403, f"field {where or 'body'} is not allowed")
        return
    if value is None:
        return  # null: the zero value of a struct, slice or map
    if isinstance(node, Obj):
        if not isinstance(value, GoObject):
            raise FieldError(400, f"field {where or 'body'} must be an object")
        _walk_object(node, value, where)
    elif isinstance(node, ListOf):
        if not isinstance(value, list):
            raise FieldError(400, f"field {where or 'body'} must be a list")
        item = node.item
        if isinstance(item, Leaf) and item.kind != "refused":
            return
        for position, element in enumerate(value):
            _walk(item, element, f"{where}[{position}]")
    else:
        if not isinstance(value, GoObject):
            raise FieldError(400, f"field {where or 'body'} must be an object")
        child = node.value
        if isinstance(child, Leaf) and child.kind != "refused":
            return
        for key, element in value.pairs:
            _walk(child, element, f"{where}[{key}]" if where else key)


def _walk_object(node: Obj, value: GoObject, where: str) -> None:
    # The hot path: a create body has a hundred keys, most of them inert. When no two keys
    # fold alike (the folded index is built anyway, for the readers), the keys that take any
    # value are dropped in one pass at C speed; paths are built only for what is walked on.
    # Small objects are walked key by key (an index would cost more than it saves).
    unique = value.unique_keys() if len(value.pairs) > _SMALL else None
    if unique is None:
        _walk_pairs(node, value, where)
        return
    skip, index = node.skip, node.index
    for folded in [key for key in unique if key not in skip]:
        item = unique[folded]
        found = index.get(folded)
        if found is None:
            if not is_zero(item):
                raise FieldError(
                    403, f"field {_key_path(value, folded, where)} is not known to dockgate"
                )
            continue
        if item is None:
            continue
        name, child = found
        if isinstance(child, Leaf):
            if is_zero(item) or item in child.allowed:
                continue  # (a leaf here is refused: the others are skipped)
        elif isinstance(child, MapOf) and child.skip and isinstance(item, GoObject):
            continue  # a map of values that take anything
        _walk(child, item, f"{where}.{name}" if where else name)


def _key_path(value: GoObject, folded: str, where: str) -> str:
    """The path of a key as the caller wrote it (for a message)."""
    key = next(k for k, _ in value.pairs if fold_key(k) == folded)
    return f"{where}.{key}" if where else key


_SMALL = 6


def _walk_pairs(node: Obj, value: GoObject, where: str) -> None:
    """Key by key, in order (a small object, or some keys fold alike: each is applied in
    turn, as Go does)."""
    _walk_struct(node, [value], where)


def _walk_struct(node: Obj, objects: list[GoObject], where: str) -> None:
    """The objects Go decodes into one struct, in order: a struct field given twice merges
    (the second object is decoded into the first one's struct), so a list of objects given
    once in each of them is a list given twice, and struct fields are walked as one group."""
    lists: set[str] = set()
    groups: dict[str, tuple[str, Obj, list[GoObject]]] = {}
    skip = node.skip
    for value in objects:
        for key, item in value.pairs:
            folded = key.lower() if key.isascii() else fold_key(key)
            if folded in skip:
                continue
            found = node.index.get(folded)
            if found is None:
                if not is_zero(item):
                    prefix = f"{where}." if where else ""
                    raise FieldError(403, f"field {prefix}{key} is not known to dockgate")
                continue
            name, child = found
            if item is None:
                continue
            path = f"{where}.{name}" if where else name
            if isinstance(child, Obj) and isinstance(item, GoObject):
                groups.setdefault(folded, (path, child, []))[2].append(item)
                continue
            if isinstance(child, ListOf) and not isinstance(child.item, Leaf):
                # Go decodes a second list into the first one's elements (they merge).
                if folded in lists:
                    raise FieldError(400, f"field {path} is given more than once")
                lists.add(folded)
            _walk(child, item, path)
    for path, child, group in groups.values():
        _walk_struct(child, group, path)


def check_query(operation: str, pairs: list[tuple[str, str]]) -> None:
    """Raise FieldError for a query parameter the table does not allow."""
    table = QUERIES.get(operation)
    if table is None:
        return
    for key, value in pairs:
        leaf = table.get(key)
        if leaf is None:
            if value != "":
                raise FieldError(403, f"query parameter {key!r} is not known to dockgate")
        elif leaf.kind == "refused" and value != "" and value not in leaf.allowed:
            raise FieldError(403, f"query parameter {key!r} is not allowed")


def iter_table(node: Node, where: str = "") -> list[tuple[str, Node]]:
    """Every (path, node) of a body table, with `[]` for list items and `{}` for map values
    (the spec-walk test and the documentation use it)."""
    found: list[tuple[str, Node]] = []
    if isinstance(node, Obj):
        for name, child in node.fields.items():
            path = f"{where}.{name}" if where else name
            found.append((path, child))
            found.extend(iter_table(child, path))
    elif isinstance(node, ListOf):
        found.extend(iter_table(node.item, where + "[]"))
    elif isinstance(node, MapOf):
        found.extend(iter_table(node.value, where + "{}"))
    return found
