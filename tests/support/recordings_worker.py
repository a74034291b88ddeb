"""A worker that serves recordings and nothing else: the product's own recording routes
(``omniserve.worker.routes_recordings``) and token middleware (``omniserve.worker.auth``) on an app
without an engine, for gateway tests of the recording proxy that need no model.

    python -m tests.support.recordings_worker --port 22495 --data-dir DIR

Settings come from the environment like a worker's (``OMNISERVE_WORKER__TOKEN``,
``OMNISERVE_WORKER__SESSION_STORAGE_CAP_MB`` …). ``start_recordings_worker`` runs it and waits for it.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

from fastapi import FastAPI

from omniserve.config import Settings, load_settings
from omniserve.worker.auth import RequireToken, worker_token
from omniserve.worker.routes_recordings import add_recording_routes
from tests.support.gateway_procs import REPO, Proc, _wait_http, free_port


def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    token = worker_token(settings.worker)
    if token:
        app.add_middleware(RequireToken, token=token)
    add_recording_routes(app, settings)
    return app


def start_recordings_worker(tmp: Path, data_dir: Path, env: Optional[dict[str, str]] = None) -> Proc:
    port = free_port()
    log = tmp / f"recordings_worker_{port}.log"
    e = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.recordings_worker", "--port", str(port),
                             "--data-dir", str(data_dir)], cwd=REPO, env=e, stdout=log.open("ab"),
                            stderr=subprocess.STDOUT)
    p = Proc(proc, port, log)
    _wait_http(p.url + "/recordings/none", proc, log, 20)   # any answer (404, 401) means it listens
    return p


def main() -> None:
    import uvicorn

    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--data-dir", required=True)
    args = ap.parse_args()
    settings = load_settings(None, {"data_dir": args.data_dir})
    uvicorn.run(create_app(settings), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
