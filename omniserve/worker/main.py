"""``omniserve worker``: one engine behind HTTP/WebSocket on (by default) 127.0.0.1:22400+index.

A worker bound beyond loopback without a worker token exits with code 2 before it loads anything.
"""
from __future__ import annotations

import argparse
import logging
import sys

from ..config import ENGINE_BACKENDS, load_settings
from .auth import is_loopback, worker_token
from .limits import biggest_frame

EXIT_CONFIG = 2


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, help="listen port (default 22400 + index)")
    p.add_argument("--index", type=int, help="worker index (default 0)")
    p.add_argument("--host", help="bind address (default 127.0.0.1; expose only behind the gateway)")
    p.add_argument("--backend", choices=ENGINE_BACKENDS, help="engine backend (default embedded)")
    p.add_argument("--data-dir", help="where session recordings go (default ./data)")
    p.add_argument("--no-record", action="store_true", help="do not record sessions")
    p.add_argument("--gateway-url", help="register with this gateway (token: OMNISERVE_WORKER__TOKEN)")
    p.add_argument("--public-url", help="URL the gateway should use to reach this worker")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from .app import create_app

    worker: dict = {"host": args.host, "index": args.index, "gateway_url": args.gateway_url,
                    "public_url": args.public_url}
    if args.port is not None:
        worker["port"] = args.port
    elif args.index is not None:
        worker["port"] = 22400 + args.index
    if args.no_record:
        worker["record_sessions"] = False
    overrides = {"worker": worker, "engine": {"backend": args.backend}, "data_dir": args.data_dir}
    settings = load_settings(getattr(args, "config", None), overrides)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    w = settings.worker
    if not is_loopback(w.host) and not worker_token(w):
        print(f"omniserve worker: refusing to listen on {w.host} without a worker token. Set "
              "OMNISERVE_WORKER__TOKEN to the gateway's worker token (gateway.worker_token, or the file "
              "worker_token in the gateway's data folder), or bind 127.0.0.1.", file=sys.stderr)
        return EXIT_CONFIG
    from ..ws_server import AbortableWebSocketProtocol

    try:
        app = create_app(settings)
    except ValueError as e:       # settings that cannot work (e.g. a public_url the gateway cannot register)
        print(f"omniserve worker: {e}", file=sys.stderr)
        return EXIT_CONFIG
    # ws: uvicorn's default (websockets-sansio, flow-controlled) plus an abort for stuck peers
    uvicorn.run(app, host=w.host, port=w.port, log_level=args.log_level,
                ws=AbortableWebSocketProtocol, ws_max_size=biggest_frame(w),
                ws_ping_interval=20.0, ws_ping_timeout=60.0)
    return 0
