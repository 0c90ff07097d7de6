"""The `serve` configuration, validated in one place; the CLI turns errors into exit messages."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dockgate.addresses import Address, parse_address
from dockgate.auth.sourceaddr import AddressList
from dockgate.relay.holding import DEFAULT_HELD_BODIES_MAX_BYTES
from dockgate.relay.tls import DEFAULT_IDENTITY_FIELDS, IDENTITY_FIELDS

DEFAULT_LISTEN = "tcp://127.0.0.1:2375"
DEFAULT_UPSTREAM = "unix:///var/run/docker.sock"


class ServeConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    listen: list[Address] = Field(default_factory=lambda: [parse_address(DEFAULT_LISTEN)])
    upstream: Address = Field(default_factory=lambda: parse_address(DEFAULT_UPSTREAM))
    insecure: bool = False
    log_format: Literal["text", "json"] = "text"
    access_log: str = "-"
    workers: int = Field(default=1, ge=1, le=256)
    # Seconds for a started request head to arrive whole (slow-header attacks).
    header_timeout: float = Field(default=10.0, gt=0)
    # Seconds a keep-alive connection may wait for its next request. Longer than the 90 s that
    # Go's HTTP client (the docker CLI) keeps idle connections, so the client closes them first.
    idle_timeout: float = Field(default=120.0, gt=0)
    # Seconds for a body the gateway holds whole (to judge it) to arrive whole, from its head.
    body_timeout: float = Field(default=30.0, gt=0)
    # Bytes all held bodies and answers of one process may take together (relay/holding.py).
    held_bodies_max: int = Field(default=DEFAULT_HELD_BODIES_MAX_BYTES, ge=64 * 1024)
    shutdown_timeout: float = Field(default=10.0, ge=0)
    socket_mode: int = Field(default=0o660, ge=0, le=0o777)
    socket_group: str | None = None
    upstream_pool_size: int = Field(default=64, ge=0)
    max_header_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    # TLS on TCP listeners (unix listeners stay plain): certificate chain and key files, and a
    # CA whose client certificates are required (which makes a TLS listener authenticated).
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    # Identities: an htpasswd file (Basic) and a tokens file (Bearer); either makes every
    # listener require authentication.
    htpasswd: str | None = None
    tokens: str | None = None
    # Which client-certificate fields name the caller, in the order tried (--tls-identity).
    tls_identity: tuple[str, ...] = DEFAULT_IDENTITY_FIELDS
    # Load balancers whose word about the client is believed: X-Forwarded-For from them, and,
    # with proxy_protocol, a PROXY protocol header that their connections must start with.
    trusted_proxies: AddressList = Field(default_factory=AddressList)
    proxy_protocol: bool = False
    # Failed authentication attempts per window before 429: per source address, per user name.
    auth_failures: int = Field(default=20, ge=0)
    auth_failures_per_user: int = Field(default=50, ge=0)
    auth_failure_window: float = Field(default=60.0, gt=0)
    # The audit trail: "off", "-" (stdout) or a file; JSON lines.
    audit_log: str = "off"
    # Clients asking for the same `GET /events` share one daemon stream (relay/eventfeed.py).
    shared_events: bool = True
    # Health (/healthz, /readyz) on a listener of its own; None: no admin listener.
    admin_listen: Address | None = None

    @field_validator("held_bodies_max", mode="before")
    @classmethod
    def _size(cls, value: object) -> object:
        return parse_size(value) if isinstance(value, str) else value

    @field_validator("tls_identity")
    @classmethod
    def _known_identity_fields(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [f for f in value if f not in IDENTITY_FIELDS]
        if unknown or not value:
            raise ValueError(f"use some of {', '.join(IDENTITY_FIELDS)} (comma-separated)")
        return value

    @field_validator("listen")
    @classmethod
    def _at_least_one_listener(cls, value: list[Address]) -> list[Address]:
        if not value:
            raise ValueError("at least one --listen address is needed")
        return value

    @model_validator(mode="after")
    def _tls_files_together(self) -> ServeConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
        if self.proxy_protocol and not self.trusted_proxies.networks:
            raise ValueError(
                "--proxy-protocol needs --trusted-proxy: the addresses whose PROXY header counts"
            )
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def client_certificates_required(self) -> bool:
        return self.tls_cert is not None and self.tls_client_ca is not None


_SIZE = re.compile(r"([0-9]+)\s*(|k|kib|m|mib|g|gib)", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "kib": 1024, "m": 1024**2, "mib": 1024**2, "g": 1024**3, "gib": 1024**3}


def parse_size(text: str) -> int:
    """`67108864`, `64MiB`, `64m`, `512KiB`: bytes, with binary units."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a size (bytes, or a number with KiB, MiB or GiB)")
    return int(match[1]) * _UNITS[match[2].lower()]
