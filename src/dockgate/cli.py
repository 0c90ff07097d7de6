"""Command-line interface: parses options, reports bad ones in one line, and runs the gateway.

Only this module exits the process.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from dockgate import __version__
from dockgate.addresses import AddressError, parse_address
from dockgate.config import DEFAULT_LISTEN, DEFAULT_UPSTREAM, ServeConfig
from dockgate.server import StartupError, run


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dockgate",
        description="A safe, fast gateway for the Docker Engine API over the network.",
    )
    parser.add_argument("--version", action="version", version=f"dockgate {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument(
        "--listen",
        action="append",
        metavar="ADDR",
        help=f"tcp://HOST:PORT or unix:///path (repeatable; default {DEFAULT_LISTEN})",
    )
    serve.add_argument(
        "--upstream",
        metavar="ADDR",
        help=f"the Docker daemon (default: $DOCKER_HOST, else {DEFAULT_UPSTREAM})",
    )
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback TCP listener without authentication (root for anyone)",
    )
    serve.add_argument("--log-format", choices=["text", "json"], default="text")
    serve.add_argument(
        "--access-log",
        default="-",
        metavar="PATH",
        help="'-' for stdout (default), 'off', or a file",
    )
    serve.add_argument("--workers", type=int, default=1, metavar="N")
    serve.add_argument("--header-timeout", type=float, default=10.0, metavar="SECONDS")
    serve.add_argument("--idle-timeout", type=float, default=120.0, metavar="SECONDS")
    serve.add_argument("--shutdown-timeout", type=float, default=10.0, metavar="SECONDS")
    serve.add_argument("--socket-mode", default="660", metavar="OCTAL")
    serve.add_argument("--socket-group", default=None, metavar="NAME|GID")
    serve.add_argument("--upstream-pool-size", type=int, default=64, metavar="N")
    serve.add_argument("--max-header-bytes", type=int, default=64 * 1024, metavar="N")
    return parser


def _serve_config(args: argparse.Namespace) -> ServeConfig:
    upstream_text = args.upstream or os.environ.get("DOCKER_HOST") or DEFAULT_UPSTREAM
    try:
        socket_mode = int(args.socket_mode, 8)
    except ValueError:
        raise ValueError(f"--socket-mode {args.socket_mode!r} is not an octal mode") from None
    return ServeConfig(
        listen=[parse_address(text) for text in (args.listen or [DEFAULT_LISTEN])],
        upstream=parse_address(upstream_text),
        insecure=args.insecure,
        log_format=args.log_format,
        access_log=args.access_log,
        workers=args.workers,
        header_timeout=args.header_timeout,
        idle_timeout=args.idle_timeout,
        shutdown_timeout=args.shutdown_timeout,
        socket_mode=socket_mode,
        socket_group=args.socket_group,
        upstream_pool_size=args.upstream_pool_size,
        max_header_bytes=args.max_header_bytes,
    )


def _validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = "--" + str(first["loc"][0]).replace("_", "-") if first["loc"] else "options"
    return f"{where}: {first['msg']}"


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    if args.command == "serve":
        try:
            config = _serve_config(args)
        except (AddressError, ValueError) as exc:
            message = _validation_message(exc) if isinstance(exc, ValidationError) else str(exc)
            print(f"dockgate: error: {message}", file=sys.stderr)
            return 2
        try:
            run(config)
        except StartupError as exc:
            print(f"dockgate: error: {exc}", file=sys.stderr)
            return 2
        return 0
    return 2
