"""`omniserve gateway --port 8006 --workers URL,URL… [--http] [--public-name NAME]… [--config FILE]`.

HTTPS by default with a self-signed certificate made on first run in the data folder; ``--http``
downgrades. The admin token is printed when it was just generated.

uvicorn runs our HTTP protocol (``edge_http``: header/body deadlines, header size cap), with
``limit_concurrency`` from ``gateway.edge.max_connections`` and its proxy-header rewriting off
(the edge decides which proxies to believe: ``gateway.edge.trusted_proxies``).
"""
from __future__ import annotations

import argparse
import logging
import resource
import sys

from ..config import load_settings


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


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from ..ws_server import AbortableWebSocketProtocol
    from .app import create_app
    from .edge_http import guarded_protocol
    from .tls import ensure_self_signed

    workers = [u.strip() for u in args.workers.split(",") if u.strip()] if args.workers else None
    overrides = {"data_dir": args.data_dir,
                 "gateway": {"host": args.host, "port": args.port, "http": args.http, "workers": workers,
                             "max_queue_size": args.max_queue_size,
                             "public_names": getattr(args, "public_names", None)}}
    settings = load_settings(args.config, overrides)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    raise_fd_limit()
    s = settings.gateway
    app = create_app(settings)
    gw = app.state.gateway
    ssl = {}
    if not s.http:
        cert, key = (s.tls_cert_file, s.tls_key_file) if s.tls_cert_file and s.tls_key_file else \
            ensure_self_signed(gw.data_dir)
        ssl = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    scheme = "http" if s.http else "https"
    shown = "localhost" if s.host in ("0.0.0.0", "::") else s.host
    print(f"omniserve gateway on {scheme}://{shown}:{s.port}  (workers: {', '.join(s.workers) or 'none yet'})",
          flush=True)
    if gw.token_generated:
        print(f"admin token (saved in {gw.data_dir / 'admin_token'}): {gw.admin_token}", flush=True)
    if s.host not in ("127.0.0.1", "::1", "localhost") and not s.public_names:
        print("note: only localhost and this machine's name are accepted as Host; "
              "add --public-name NAME for the names or addresses other machines use", flush=True)
    e = s.edge
    http = guarded_protocol(e.header_timeout_s, e.body_timeout_s, e.max_header_bytes)
    uvicorn.run(app, host=s.host, port=s.port, log_level=args.log_level, http=http,
                limit_concurrency=e.max_connections, proxy_headers=False, h11_max_incomplete_event_size=e.max_header_bytes,
                ws=AbortableWebSocketProtocol if s.uvicorn_ws == "websockets-sansio" else s.uvicorn_ws,
                ws_max_size=s.max_chat_frame_bytes,
                ws_ping_interval=s.ws_ping_interval_s or None, ws_ping_timeout=20.0,
                ws_per_message_deflate=False, backlog=4096, timeout_graceful_shutdown=3, **ssl)
    return 0


if __name__ == "__main__":
    sys.exit(run(argparse.ArgumentParser().parse_args()))
