"""Serving the web folder (``omniserve/web``): one HTML file per page (the two full-duplex
pages share ``duplex.html``) plus ``/static``.

A page whose mode is disabled redirects (302) to ``/?disabled=<app_id>``. A page file that does
not exist yet answers 404.
"""
from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from ..protocol.modes import MODES
from .apps import AppRegistry

WEB_DIR = Path(__file__).resolve().parent.parent / "web"

# path -> (file, app_id or None); the two full-duplex modes share one page file, the path picks
PAGES: dict[str, tuple[str, str | None]] = {
    "/": ("index.html", None),
    **{m.page: (m.page_file, m.app_id) for m in MODES},
    "/admin": ("admin.html", None),
}

_NO_CACHE = {"Cache-Control": "no-cache"}


def _page(name: str) -> Response:
    p = WEB_DIR / name
    if not p.is_file():
        raise HTTPException(404, f"page {name} is not installed")
    return FileResponse(p, media_type="text/html; charset=utf-8", headers=_NO_CACHE)


def mount_pages(app: FastAPI, apps: AppRegistry) -> None:
    for path, (name, app_id) in PAGES.items():
        def handler(name: str = name, app_id: str | None = app_id) -> Response:  # defaults bind per page
            if app_id is not None and not apps.enabled(app_id):
                return RedirectResponse(f"/?disabled={app_id}", status_code=302)
            return _page(name)

        app.add_api_route(path, _bind(handler, name, app_id), methods=["GET"], include_in_schema=False)

    @app.get("/s/{session_id}", include_in_schema=False)
    def session_page(session_id: str) -> Response:
        return _page("session.html")

    static = WEB_DIR / "static"
    app.mount("/static", StaticFiles(directory=str(static), check_dir=False), name="static")


def _bind(fn, name: str, app_id: str | None):
    def endpoint() -> Response:
        return fn(name, app_id)
    endpoint.__name__ = f"page_{app_id or name.split('.')[0]}"
    return endpoint
