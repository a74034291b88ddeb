"""Ephemeral tokens: short-lived, minted with an API key or the admin token
(``/v1/realtime/client_secrets``), for browsers that must not hold a long-lived key.

A token is ``ek_`` + 32 random bytes, valid until it expires (``gateway.ephemeral_token_ttl_s``,
at most ``MAX_TOKEN_TTL_S``), any number of times within that lifetime. Only its SHA-256 is kept.
A token dies with the key that minted it: revoking the key refuses its tokens too.

In process (the default) tokens are held in memory only: a restarted gateway forgets them. With
``gateway.redis_url`` (docs/scaling.md) a token is also stored in Redis under ``key("token",
sha256)`` with a Redis expiry equal to its lifetime, so a token minted by one gateway opens a socket
on any other: a gateway that does not know a token asks Redis once (one GET) and then remembers it.
Minting needs Redis (HTTP 503 without it); a token already seen here is checked without it.
"""
from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Optional

from .keys import MAX_SECRET_LEN, TOKEN_PREFIX, ApiKeyStore, secret_hash
from .state.link import UNAVAILABLE, RedisLink, StateUnavailable, key

MAX_TOKEN_TTL_S = 600.0
MAX_TOKENS = 100_000          # live ephemeral tokens held at once (expired ones are pruned first)


@dataclass
class _Token:
    expires_at: float
    key_id: Optional[str]       # None: minted with the admin token

    def dump(self) -> str:
        return f"{self.expires_at:.3f} {self.key_id or ''}"

    @staticmethod
    def parse(raw: str) -> Optional["_Token"]:
        try:
            exp, key_id = raw.split(" ", 1)
            return _Token(float(exp), key_id or None)
        except ValueError:
            return None


class EphemeralTokens:
    """Short-lived tokens: SHA-256 of the value -> expiry and the key that minted it, in memory and,
    with a ``RedisLink``, in Redis under ``key("token", sha256)`` with the token's lifetime as TTL."""

    def __init__(self, keys: ApiKeyStore, ttl_s: float, link: Optional[RedisLink] = None) -> None:
        self.keys = keys
        self.ttl_s = max(1.0, min(float(ttl_s), MAX_TOKEN_TTL_S))
        self._tokens: dict[str, _Token] = {}
        self._link = link

    def _remember(self, h: str, t: _Token) -> None:
        if len(self._tokens) >= MAX_TOKENS:
            now = time.time()
            self._tokens = {v: x for v, x in self._tokens.items() if x.expires_at > now}
            while len(self._tokens) >= MAX_TOKENS:
                self._tokens.pop(next(iter(self._tokens)))
        self._tokens[h] = t

    async def mint(self, key_id: Optional[str], ttl_s: Optional[float] = None) -> tuple[str, int]:
        """(token, expires_at in Unix seconds); ``ttl_s`` may only shorten the configured lifetime.
        ``StateUnavailable`` when shared and Redis cannot be reached."""
        ttl = self.ttl_s if ttl_s is None else max(1.0, min(float(ttl_s), self.ttl_s))
        value = TOKEN_PREFIX + secrets.token_urlsafe(32)
        t = _Token(expires_at=time.time() + ttl, key_id=key_id)
        h = secret_hash(value)
        if self._link is not None:
            try:
                await self._link.client.set(key("token", h), t.dump(), px=int(ttl * 1000), nx=True)
            except UNAVAILABLE as e:
                self._link.failed(e)
                raise StateUnavailable() from None      # the details are in the log, not for clients
            self._link.ok()
        self._remember(h, t)
        return value, int(t.expires_at)

    async def check(self, value: Optional[str]) -> bool:
        """``StateUnavailable`` only when the token is not known here and Redis cannot be asked."""
        if not value or not value.startswith(TOKEN_PREFIX) or len(value) > MAX_SECRET_LEN:
            return False
        h = secret_hash(value)       # a dict lookup of the hash: the value is 256 random bits, no timing to learn
        t = self._tokens.get(h)
        if t is None and self._link is not None:
            t = await self._fetch(h)
        if t is None:
            return False
        if t.expires_at <= time.time() or (t.key_id is not None and not self.keys.exists(t.key_id)):
            self._tokens.pop(h, None)
            return False
        return True

    async def _fetch(self, h: str) -> Optional[_Token]:
        """A token minted by another gateway (one GET), remembered here once found."""
        assert self._link is not None
        try:
            raw = await self._link.client.get(key("token", h))
        except UNAVAILABLE as e:
            self._link.failed(e)
            raise StateUnavailable() from None      # the details are in the log, not for clients
        self._link.ok()
        t = _Token.parse(raw) if isinstance(raw, str) else None
        if t is not None:
            self._remember(h, t)
        return t
