"""`omniserve gateway --port 8006 --workers URL,URL… [--http] [--public-name NAME]… [--config FILE]
[--processes N --redis-url URL]`.

HTTPS by default with a self-signed certificate made on first run in the data folder; ``--http``
downgrades. The admin token is printed when it was just generated.

uvicorn runs our HTTP protocol (``edge_http``: header/body deadlines, header size cap), with
``limit_concurrency`` from ``gateway.edge.max_connections`` and its proxy-header rewriting off
(the edge decides which proxies to believe: ``gateway.edge.trusted_proxies``).

``--processes N`` (more than 1, with Redis): this process becomes the parent of N gateway processes
sharing the port (``processes``); each of them runs this file with ``--member``.
"""
from __future__ import annotations

import argparse
import logging
import resource
import sys
from pathlib import Path
from typing import Optional

from pydantic import ValidationError

from ..config import GatewaySettings, Settings, load_settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="bind address (default 0.0.0.0)")
    p.add_argument("--port", type=int, help="port (default 8006)")
    p.add_argument("--workers", help="comma-separated worker URLs, e.g. http://127.0.0.1:22400,http://127.0.0.1:22401")
    p.add_argument("--http", action="store_true", default=None, help="plain HTTP instead of HTTPS")
    p.add_argument("--data-dir", help="data folder (sessions, voices, TLS, admin token)")
    p.add_argument("--max-queue-size", type=int, help="queue capacity")
    p.add_argument("--public-name", action="append", dest="public_names", metavar="NAME",
                   help="a host name (or address) clients use to reach this gateway, besides localhost; "
                        "repeatable (gateway.public_names)")
    p.add_argument("--processes", type=int, metavar="N",
                   help="gateway processes sharing this port (SO_REUSEPORT), e.g. one per core; "
                        "more than 1 needs --redis-url (gateway.processes, default 1)")
    p.add_argument("--redis-url", metavar="URL",
                   help="shared state in Redis, e.g. redis://127.0.0.1:6379/0 or unix:///path/redis.sock "
                        "(gateway.redis_url; default: in this process). A password is better set in the config "
                        "file or OMNISERVE_GATEWAY__REDIS_URL")
    p.add_argument("--member", action="store_true", help=argparse.SUPPRESS)  # one of --processes N (processes.py)
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def raise_fd_limit() -> int:
    """Thousands of waiting clients need thousands of sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            return hard
        except (ValueError, OSError):
            pass
    return soft


def tls_files(s: GatewaySettings, data_dir: Path) -> Optional[tuple[str, str]]:
    """(cert, key) to serve HTTPS with — configured, or self-signed (made on first run); None for --http."""
    from .tls import ensure_self_signed

    if s.http:
        return None
    cert, key = (s.tls_cert_file, s.tls_key_file) if s.tls_cert_file and s.tls_key_file else \
        ensure_self_signed(data_dir)
    return str(cert), str(key)


def print_banner(s: GatewaySettings, data_dir: Path, admin_token: str, token_generated: bool) -> None:
    scheme = "http" if s.http else "https"
    shown = "localhost" if s.host in ("0.0.0.0", "::") else s.host
    procs = f", {s.processes} processes" if s.processes > 1 else ""
    print(f"omniserve gateway on {scheme}://{shown}:{s.port}  (workers: {', '.join(s.workers) or 'none yet'}{procs})",
          flush=True)
    if token_generated:
        print(f"admin token (saved in {data_dir / 'admin_token'}): {admin_token}", flush=True)
    if s.host not in ("127.0.0.1", "::1", "localhost") and not s.public_names:
        print("note: only localhost and this machine's name are accepted as Host; "
              "add --public-name NAME for the names or addresses other machines use", flush=True)


def _first_run(settings: Settings) -> None:
    """The parent of --processes N: certificate and tokens made once, before any member starts."""
    from ..tokens import WORKER_TOKEN_FILE, load_or_create
    from .auth import load_admin_token

    s, data_dir = settings.gateway, Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    tls_files(s, data_dir)
    load_or_create(s.worker_token, data_dir, WORKER_TOKEN_FILE)
    print_banner(s, data_dir, *load_admin_token(s.admin_token, data_dir))


def run(args: argparse.Namespace) -> int:
    from .processes import member_sockets, run_group

    workers = [u.strip() for u in args.workers.split(",") if u.strip()] if args.workers else None
    overrides = {"data_dir": args.data_dir,
                 "gateway": {"host": args.host, "port": args.port, "http": args.http, "workers": workers,
                             "max_queue_size": args.max_queue_size,
                             "public_names": getattr(args, "public_names", None),
                             "processes": getattr(args, "processes", None),
                             "redis_url": getattr(args, "redis_url", None)}}
    try:
        settings = load_settings(args.config, overrides)
    except ValidationError as e:   # e.g. --processes 0: say which setting, without a traceback
        print(f"invalid settings: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    s = settings.gateway
    member = getattr(args, "member", False)
    if s.processes > 1 and not member:
        argv = getattr(args, "argv", None) or sys.argv[1:]
        return run_group(settings, argv, lambda: _first_run(settings))
    import uvicorn

    from ..ws_server import AbortableWebSocketProtocol
    from .app import create_app
    from .edge_http import guarded_protocol

    raise_fd_limit()
    app = create_app(settings)
    gw = app.state.gateway
    cert, key = tls_files(s, gw.data_dir) or (None, None)
    if not member:  # the parent of the members printed it
        print_banner(s, gw.data_dir, gw.admin_token, gw.token_generated)
    edge = s.edge
    http = guarded_protocol(edge.header_timeout_s, edge.body_timeout_s, edge.max_header_bytes)
    config = uvicorn.Config(
        app, host=s.host, port=s.port, log_level=args.log_level, http=http,
        limit_concurrency=edge.max_connections, proxy_headers=False, h11_max_incomplete_event_size=edge.max_header_bytes,
        ws=AbortableWebSocketProtocol if s.uvicorn_ws == "websockets-sansio" else s.uvicorn_ws,
        ws_max_size=s.max_chat_frame_bytes,
        ws_ping_interval=s.ws_ping_interval_s or None, ws_ping_timeout=20.0,
        ws_per_message_deflate=False, backlog=4096, timeout_graceful_shutdown=3, ssl_certfile=cert, ssl_keyfile=key)
    server = uvicorn.Server(config)
    try:
        socks = member_sockets(s.host, s.port) if member else None
    except OSError as exc:
        logging.getLogger(__name__).error("cannot listen on %s:%s: %s", s.host, s.port, exc)
        return 3
    server.run(sockets=socks)
    return 0 if server.started else 3


if __name__ == "__main__":
    sys.exit(run(argparse.ArgumentParser().parse_args()))
