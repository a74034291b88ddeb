"""Secrets kept in the data folder: the admin token and the worker token.

A token comes from configuration; when unset it is generated once with ``secrets``, stored in
``<data_dir>/<name>`` (mode 0600, folder 0700) and reused. Shared by the gateway (which checks
and sends them) and the launcher (which hands the worker token to the workers it starts).
"""
from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path
from typing import Optional

ADMIN_TOKEN_FILE = "admin_token"
WORKER_TOKEN_FILE = "worker_token"


def load_or_create(configured: Optional[str], data_dir: Path, name: str) -> tuple[str, bool]:
    """(token, newly_generated)."""
    if configured:
        return configured, False
    path = data_dir / name
    if path.is_file():
        tok = path.read_text().strip()
        if tok:
            return tok, False
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    tok = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(tok + "\n")
    os.chmod(path, 0o600)
    return tok, True


def bearer_ok(authorization: Optional[str], token: str) -> bool:
    """``Authorization: Bearer <token>``, compared in constant time."""
    if not authorization or not authorization.startswith("Bearer ") or not token:
        return False
    return hmac.compare_digest(authorization[7:].strip().encode(), token.encode())


def bearer(token: Optional[str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}
