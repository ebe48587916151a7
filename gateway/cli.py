"""`python -m gateway --host H --port P (--routes-file F | --route-source module:factory)`."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

import uvicorn

from gateway.app import GatewayApp
from gateway.serve import uvicorn_config
from gateway.sources import JsonFileRouteSource, RouteSource


def load_route_source(spec: str) -> RouteSource:
    """`package.module:factory` -> factory(), which returns a RouteSource (configured from the environment)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"--route-source wants module:callable, got {spec!r}")
    source = getattr(importlib.import_module(module_name), attr)()
    if not isinstance(source, RouteSource):
        raise TypeError(f"{spec} returned {type(source).__name__}, which has no async load()")
    return source


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gateway", description="OpenAI-compatible router for Bud Foundry")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--routes-file", help="JSON route table, re-read when it changes")
    where.add_argument("--route-source", help="module:factory returning a RouteSource")
    parser.add_argument("--poll-interval-s", type=float, default=1.0, help="how often the route source is read")
    parser.add_argument("--down-for-s", type=float, default=3.0, help="how long a refusing replica is skipped")
    parser.add_argument("--connect-timeout-s", type=float, default=2.0)
    parser.add_argument("--upstream-timeout-s", type=float, default=600.0, help="longest silence from a replica")
    parser.add_argument("--max-connections", type=int, default=1000, help="upstream connection pool size")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stdout, format="%(levelname)s %(asctime)s %(name)s: %(message)s"
    )
    source = JsonFileRouteSource(args.routes_file) if args.routes_file else load_route_source(args.route_source)
    app = GatewayApp(
        source,
        poll_interval_s=args.poll_interval_s,
        down_for_s=args.down_for_s,
        connect_timeout_s=args.connect_timeout_s,
        upstream_timeout_s=args.upstream_timeout_s,
        max_connections=args.max_connections,
    )
    server = uvicorn.Server(uvicorn_config(app, args.host, args.port, args.log_level))
    server.run()
    return 0 if server.started else 3
