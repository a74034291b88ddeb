"""API keys (admin-managed, long-lived) and ephemeral tokens (short-lived, minted with a key).

An API key is ``osk_`` + 32 random bytes (``secrets.token_urlsafe``). Only its SHA-256 is kept,
in ``<data_dir>/api_keys.json`` (mode 0600, written to a temp file and renamed into place); the
secret is shown once, in the answer to its creation. A key is checked by hashing what the client
sent and comparing that with every stored hash in constant time (``hmac.compare_digest``).

An ephemeral token is ``ek_`` + 32 random bytes, held in memory only (a restarted gateway forgets
them), valid until it expires (``gateway.ephemeral_token_ttl_s``), any number of times within
that lifetime. A token dies with the key that minted it: revoking the key refuses its tokens too.

When ``gateway.require_keys`` is on, a WebSocket handshake needs ``Authorization: Bearer <key or
token>`` or ``?token=<ephemeral token>`` (a long-lived key is never accepted in a URL); where the
caller passes the offered subprotocols, also ``openai-insecure-api-key.<ephemeral token>``, the way
OpenAI's browser clients send a token (again never a long-lived key).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

log = logging.getLogger(__name__)

KEY_PREFIX = "osk_"
TOKEN_PREFIX = "ek_"
TOKEN_SUBPROTOCOL = "openai-insecure-api-key."   # a browser's token as a WebSocket subprotocol (OpenAI clients)
MAX_TOKEN_TTL_S = 600.0
MAX_TOKENS = 100_000          # live ephemeral tokens held at once (expired ones are pruned first)
_MAX_SECRET_LEN = 200


class TooManyKeys(Exception):
    """The configured number of API keys exists already (HTTP 409)."""


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def bearer(authorization: Optional[str]) -> Optional[str]:
    """The credential of ``Authorization: Bearer <x>``; None when absent or another scheme."""
    if not authorization or not authorization.startswith("Bearer "):
        return None
    v = authorization[7:].strip()
    return v if v and len(v) <= _MAX_SECRET_LEN else None


class ApiKeyStore:
    def __init__(self, path: Path, max_keys: int) -> None:
        self._path = path
        self.max_keys = max(0, int(max_keys))
        self._keys: list[dict] = []
        self._lock = threading.Lock()
        if path.is_file():
            try:
                for k in json.loads(path.read_text()):
                    if isinstance(k, dict) and {"id", "name", "hash", "created_at"} <= set(k):
                        self._keys.append(k)
            except Exception as e:
                log.warning("ignoring %s: %s", path, e)

    def _save(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self._path.with_name(self._path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self._keys, f, indent=2)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self._path)

    @staticmethod
    def view(k: dict) -> dict:
        return {"id": k["id"], "name": k["name"], "created_at": k["created_at"], "last_used_at": k.get("last_used_at")}

    def list(self) -> list[dict]:
        return [self.view(k) for k in self._keys]

    def create(self, name: str) -> dict:
        """The new key's view plus ``key``, the secret (the only time it is seen)."""
        with self._lock:
            if len(self._keys) >= self.max_keys:
                raise TooManyKeys(f"at most {self.max_keys} API keys; revoke one first")
            secret = KEY_PREFIX + secrets.token_urlsafe(32)
            k = {"id": "key_" + secrets.token_hex(8), "name": name, "hash": _hash(secret),
                 "created_at": round(time.time(), 3), "last_used_at": None}
            self._keys.append(k)
            self._save()
        return {**self.view(k), "key": secret}

    def revoke(self, key_id: str) -> bool:
        with self._lock:
            kept = [k for k in self._keys if k["id"] != key_id]
            if len(kept) == len(self._keys):
                return False
            self._keys = kept
            self._save()
        return True

    def any(self) -> bool:
        """Whether any key exists (then ``/v1/realtime`` requires one)."""
        return bool(self._keys)

    def exists(self, key_id: str) -> bool:
        return any(k["id"] == key_id for k in self._keys)

    def check(self, secret: Optional[str]) -> Optional[str]:
        """The id of the key ``secret`` is, or None. Every stored hash is compared (constant time);
        ``last_used_at`` is kept in memory and written with the next change to the file."""
        if not secret or not secret.startswith(KEY_PREFIX):
            return None
        h = _hash(secret).encode()
        found: Optional[dict] = None
        for k in self._keys:
            if hmac.compare_digest(h, k["hash"].encode()):
                found = k
        if found is None:
            return None
        found["last_used_at"] = round(time.time(), 3)
        return found["id"]


@dataclass
class _Token:
    expires_at: float
    key_id: Optional[str]       # None: minted with the admin token


class EphemeralTokens:
    """Short-lived tokens in memory: value -> expiry and the key that minted it."""

    def __init__(self, keys: ApiKeyStore, ttl_s: float) -> None:
        self.keys = keys
        self.ttl_s = max(1.0, min(float(ttl_s), MAX_TOKEN_TTL_S))
        self._tokens: dict[str, _Token] = {}

    def mint(self, key_id: Optional[str], ttl_s: Optional[float] = None) -> tuple[str, int]:
        """(token, expires_at in Unix seconds); ``ttl_s`` may only shorten the configured lifetime."""
        now = time.time()
        if len(self._tokens) >= MAX_TOKENS:
            self._tokens = {v: t for v, t in self._tokens.items() if t.expires_at > now}
            while len(self._tokens) >= MAX_TOKENS:
                self._tokens.pop(next(iter(self._tokens)))
        ttl = self.ttl_s if ttl_s is None else max(1.0, min(float(ttl_s), self.ttl_s))
        value = TOKEN_PREFIX + secrets.token_urlsafe(32)
        t = _Token(expires_at=now + ttl, key_id=key_id)
        self._tokens[value] = t
        return value, int(t.expires_at)

    def check(self, value: Optional[str]) -> bool:
        if not value or not value.startswith(TOKEN_PREFIX):
            return False
        t = self._tokens.get(value)        # a dict lookup: the value is 256 random bits, no timing to learn
        if t is None:
            return False
        if t.expires_at <= time.time() or (t.key_id is not None and not self.keys.exists(t.key_id)):
            self._tokens.pop(value, None)
            return False
        return True


class KeyAuth:
    """What the WebSocket endpoints ask when ``gateway.require_keys`` is on."""

    def __init__(self, keys: ApiKeyStore, tokens: EphemeralTokens, admin_ok) -> None:
        self.keys = keys
        self.tokens = tokens
        self._admin_ok = admin_ok

    def handshake_ok(self, authorization: Optional[str], query_token: Optional[str],
                     subprotocols: Sequence[str] = ()) -> bool:
        cred = bearer(authorization)
        if cred is not None:
            return (self.tokens.check(cred) or self.keys.check(cred) is not None
                    or self._admin_ok(authorization))
        # in a URL or a subprotocol only an ephemeral token: a long-lived key would end up in logs
        # and histories
        if query_token is not None:
            return self.tokens.check(query_token)
        offered = next((p for p in subprotocols if p.startswith(TOKEN_SUBPROTOCOL)), None)
        return offered is not None and self.tokens.check(offered[len(TOKEN_SUBPROTOCOL):])
