"""Who may call what: the admin and worker tokens, and the Host / Origin allow-lists.

Tokens come from configuration or are generated once into the data folder (``omniserve.tokens``).
Admin routes take ``Authorization: Bearer <admin token>``; worker registration takes the worker
token (or the admin token, for operators).

The Host allow-list stops DNS rebinding: a browser tricked into sending our address under a
foreign name still sends that foreign name as ``Host``. Allowed are the localhost names (any
port), this machine's host name (it is in the self-signed certificate) and ``gateway.public_names``.
An ``Origin`` passes when its host is itself on that list, or it is in ``gateway.allowed_origins``;
it never passes merely because it equals the ``Host`` header.
"""
from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Iterable, Optional
from urllib.parse import urlsplit

from fastapi import HTTPException, Request

from ..tokens import ADMIN_TOKEN_FILE, bearer_ok, load_or_create

LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def load_admin_token(configured: Optional[str], data_dir: Path) -> tuple[str, bool]:
    """(token, newly_generated); stored in ``<data_dir>/admin_token`` (0600) when generated."""
    return load_or_create(configured, data_dir, ADMIN_TOKEN_FILE)


class AdminAuth:
    """Checks bearer tokens in constant time."""

    def __init__(self, token: str, worker_token: Optional[str] = None) -> None:
        self._token = token
        self._worker_token = worker_token or ""

    def ok(self, authorization: Optional[str]) -> bool:
        return bearer_ok(authorization, self._token)

    def is_admin(self, request: Request) -> bool:
        return self.ok(request.headers.get("authorization"))

    def require(self, request: Request) -> None:
        if not self.is_admin(request):
            raise _unauthorized("admin token required (Authorization: Bearer <token>)")

    def require_worker(self, request: Request) -> None:
        """The worker token (what registering workers hold) or the admin token."""
        a = request.headers.get("authorization")
        if not (bearer_ok(a, self._worker_token) or self.ok(a)):
            raise _unauthorized("worker token required (Authorization: Bearer <worker token>)")


def _unauthorized(text: str) -> HTTPException:
    return HTTPException(401, text, headers={"WWW-Authenticate": "Bearer"})


def host_name(value: Optional[str]) -> Optional[str]:
    """The name part of a ``Host`` header (``name[:port]``, ``[v6][:port]``), lower case, without
    a trailing dot; None when absent or malformed."""
    if not value or len(value) > 300:
        return None
    v = value.strip().lower()
    if v.startswith("["):
        end = v.find("]")
        if end < 0:
            return None
        name, rest = v[1:end], v[end + 1:]
        try:
            ipaddress.IPv6Address(name)
        except ValueError:
            return None
    else:
        name, sep, port = v.partition(":")
        rest = sep + port
    if rest and not (rest.startswith(":") and rest[1:].isdigit() and len(rest) <= 6):
        return None
    name = name.rstrip(".")
    if not name or any(c in name for c in "/\\@ \t?#%"):
        return None
    return name


class HostPolicy:
    """The Host allow-list and the Origin rule built on it."""

    def __init__(self, public_names: Iterable[str] = (), allowed_origins: Iterable[str] = (),
                 own_name: Optional[str] = None) -> None:
        names = set(LOCAL_NAMES)
        mine = (own_name if own_name is not None else socket.gethostname()).lower().rstrip(".")
        if mine:
            names.add(mine)
        for n in public_names:
            h = host_name(n.strip()) if "//" not in n else host_name(urlsplit(n).netloc)
            if h:
                names.add(h)
        self.names = frozenset(names)
        self.allowed_origins = frozenset(o.strip().rstrip("/").lower() for o in allowed_origins if o.strip())
        self.any_origin = "*" in self.allowed_origins

    def host_allowed(self, host: Optional[str]) -> bool:
        name = host_name(host)
        return name is not None and name in self.names

    def origin_allowed(self, origin: Optional[str]) -> bool:
        """Absent Origin (a non-browser client) passes; ``null`` and foreign origins do not."""
        if origin is None:
            return True
        o = origin.strip().rstrip("/").lower()
        if self.any_origin or o in self.allowed_origins:
            return True
        try:
            parts = urlsplit(o)
        except ValueError:
            return False
        if parts.scheme not in ("http", "https") or parts.path or parts.query:
            return False
        return self.host_allowed(parts.netloc)
