"""Admin token and WebSocket Origin checks.

The token comes from configuration; if unset it is generated once with ``secrets``, stored in
``<data_dir>/admin_token`` (mode 0600) and printed, so the operator can use it.
"""
from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

from fastapi import HTTPException, Request


def load_admin_token(configured: Optional[str], data_dir: Path) -> tuple[str, bool]:
    """(token, newly_generated)."""
    if configured:
        return configured, False
    path = data_dir / "admin_token"
    if path.is_file():
        tok = path.read_text().strip()
        if tok:
            return tok, False
    data_dir.mkdir(parents=True, exist_ok=True)
    tok = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(tok + "\n")
    os.chmod(path, 0o600)
    return tok, True


class AdminAuth:
    def __init__(self, token: str) -> None:
        self._token = token.encode()

    def ok(self, authorization: Optional[str]) -> bool:
        if not authorization or not authorization.startswith("Bearer "):
            return False
        return hmac.compare_digest(authorization[7:].strip().encode(), self._token)

    def is_admin(self, request: Request) -> bool:
        return self.ok(request.headers.get("authorization"))

    def require(self, request: Request) -> None:
        if not self.is_admin(request):
            raise HTTPException(401, "admin token required (Authorization: Bearer <token>)",
                                headers={"WWW-Authenticate": "Bearer"})


def origin_allowed(origin: Optional[str], host: Optional[str], allowed: list[str]) -> bool:
    """Absent Origin (non-browser client) is allowed; else same origin or on the allow-list."""
    if not origin:
        return True
    if "*" in allowed or origin.rstrip("/") in {a.rstrip("/") for a in allowed}:
        return True
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:
        return False
    return bool(host) and netloc.lower() == host.lower()
