"""API keys: admin-managed, long-lived (``ephemeral``: the short-lived tokens minted with them;
``key_auth``: what a WebSocket handshake must show).

An API key is ``osk_`` + 32 random bytes (``secrets.token_urlsafe``). Only its SHA-256 is kept,
in ``<data_dir>/api_keys.json`` (mode 0600, written to a temp file and renamed into place); the
secret is shown once, in the answer to its creation. A key is checked by hashing what the client
sent and comparing that with every stored hash in constant time (``hmac.compare_digest``).

With ``gateway.redis_url`` (several gateways, docs/scaling.md) the keys' records live in a shared
map that every gateway mirrors (``state.shared``): creating or revoking a key on one gateway holds
on all of them within a second, and checking a key never waits on Redis. ``last_used_at`` is
written there in the background, at most every ``USE_WRITE_EVERY_S`` per key and gateway.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Optional

from .state.link import StateUnavailable
from .state.shared import MapFull, SharedMap, SharedMaps

log = logging.getLogger(__name__)

KEY_PREFIX = "osk_"
TOKEN_PREFIX = "ek_"
MAX_SECRET_LEN = 200
USE_WRITE_EVERY_S = 10.0      # shared state: a key's last_used_at reaches Redis at most this often per gateway


class TooManyKeys(Exception):
    """The configured number of API keys exists already (HTTP 409)."""


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def bearer(authorization: Optional[str]) -> Optional[str]:
    """The credential of ``Authorization: Bearer <x>``; None when absent or another scheme."""
    if not authorization or not authorization.startswith("Bearer "):
        return None
    v = authorization[7:].strip()
    return v if v and len(v) <= MAX_SECRET_LEN else None


class ApiKeyStore:
    def __init__(self, path: Path, max_keys: int, shared: Optional[SharedMaps] = None) -> None:
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
        self._shared = shared
        self._map: Optional[SharedMap] = None       # shared state: the records, id -> _record(k)
        self._used: Optional[SharedMap] = None      # and id -> last_used_at (no notices: reloads spread it)
        self._used_sent: dict[str, float] = {}
        if shared is not None:      # the file is the first view only; the shared map rules from now on
            self._map = shared.map("api_keys", self._changed, {k["id"]: _record(k) for k in self._keys})
            self._used = shared.map("api_keys_used", self._used_changed, notify=False, seed={
                k["id"]: repr(k["last_used_at"]) for k in self._keys if k.get("last_used_at")})

    def _changed(self, data: dict[str, str]) -> None:
        """The shared map changed: its records, with the latest use known here or there."""
        old = {k["id"]: k for k in self._keys}
        keys = []
        for key_id, raw in data.items():
            try:
                r = json.loads(raw)
                k = {"id": key_id, "name": str(r["name"]), "hash": str(r["hash"]),
                     "created_at": float(r["created_at"])}
            except (ValueError, KeyError, TypeError):
                log.warning("ignoring API key %s in Redis: not a key record", key_id)
                continue
            shared_use = self._used.data.get(key_id) if self._used is not None else None
            k["last_used_at"] = _latest(old.get(key_id, {}).get("last_used_at"), shared_use)
            keys.append(k)
        self._keys = sorted(keys, key=lambda k: k["created_at"])
        self._used_sent = {i: t for i, t in self._used_sent.items() if i in data}

    def _used_changed(self, data: dict[str, str]) -> None:
        for k in self._keys:
            k["last_used_at"] = _latest(k.get("last_used_at"), data.get(k["id"]))

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

    async def create(self, name: str) -> dict:
        """The new key's view plus ``key``, the secret (the only time it is seen). ``TooManyKeys``;
        ``StateUnavailable`` when the shared map is unreachable."""
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        k: dict[str, Any] = {"id": "key_" + secrets.token_hex(8), "name": name, "hash": secret_hash(secret),
                             "created_at": round(time.time(), 3), "last_used_at": None}
        if self._map is None:
            await asyncio.to_thread(self._create_in_file, k)
        else:
            try:
                await self._map.write({k["id"]: _record(k)}, cap=self.max_keys)
            except MapFull:
                raise TooManyKeys(self._too_many()) from None
        return {**self.view(k), "key": secret}

    def _too_many(self) -> str:
        return f"at most {self.max_keys} API keys; revoke one first"

    def _create_in_file(self, k: dict) -> None:
        with self._lock:
            if len(self._keys) >= self.max_keys:
                raise TooManyKeys(self._too_many())
            self._keys.append(k)
            self._save()

    async def revoke(self, key_id: str) -> bool:
        """False for an unknown key; ``StateUnavailable`` when the shared map is unreachable."""
        if self._map is None or self._used is None:
            return await asyncio.to_thread(self._revoke_in_file, key_id)
        if not await self._map.write(delete=[key_id]):
            return False
        try:
            await self._used.write(delete=[key_id])
        except StateUnavailable:
            pass        # an orphan "last used" entry is harmless
        return True

    def _revoke_in_file(self, key_id: str) -> bool:
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
        ``last_used_at`` is kept in memory and written with the next change to the file (shared
        state: to Redis in the background, at most every ``USE_WRITE_EVERY_S``)."""
        if not secret or not secret.startswith(KEY_PREFIX):
            return None
        h = secret_hash(secret).encode()
        found: Optional[dict] = None
        for k in self._keys:
            if hmac.compare_digest(h, k["hash"].encode()):
                found = k
        if found is None:
            return None
        now = found["last_used_at"] = round(time.time(), 3)
        if self._shared is not None and now - self._used_sent.get(found["id"], 0.0) >= USE_WRITE_EVERY_S:
            self._used_sent[found["id"]] = now
            self._shared.spawn(self._write_use(found["id"], now))
        return found["id"]

    async def _write_use(self, key_id: str, t: float) -> None:
        try:
            if self._used is not None:
                await self._used.write({key_id: repr(t)})
        except StateUnavailable:
            pass        # only the "last used" column: a later use writes it


def _record(k: dict) -> str:
    """A key as stored in the shared map (its id is the field)."""
    return json.dumps({"name": k["name"], "hash": k["hash"], "created_at": k["created_at"]})


def _latest(*times: Optional[float | str]) -> Optional[float]:
    """The latest of these times (Unix seconds; as stored, or None when unknown)."""
    seen = []
    for t in times:
        try:
            if t is not None:
                seen.append(float(t))
        except ValueError:
            pass
    return max(seen) if seen else None
