"""What a WebSocket handshake must show when keys are required (``gateway.require_keys``, and
``/v1/realtime`` as soon as one API key exists).

A handshake needs ``Authorization: Bearer <key or token>`` or ``?token=<ephemeral token>`` (a
long-lived key is never accepted in a URL); where the caller passes the offered subprotocols, also
``openai-insecure-api-key.<ephemeral token>``, the way OpenAI's browser clients send a token (again
never a long-lived key).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

from .ephemeral import EphemeralTokens
from .keys import ApiKeyStore, bearer

TOKEN_SUBPROTOCOL = "openai-insecure-api-key."   # a browser's token as a WebSocket subprotocol (OpenAI clients)


class KeyAuth:
    """What the WebSocket endpoints ask when ``gateway.require_keys`` is on."""

    def __init__(self, keys: ApiKeyStore, tokens: EphemeralTokens, admin_ok: Callable[[Optional[str]], bool]) -> None:
        self.keys = keys
        self.tokens = tokens
        self._admin_ok = admin_ok

    async def handshake_ok(self, authorization: Optional[str], query_token: Optional[str],
                           subprotocols: Sequence[str] = ()) -> bool:
        """Keys and the admin token are checked here without waiting; an ephemeral token not seen
        here yet costs one Redis GET when shared (``StateUnavailable`` if Redis cannot be asked)."""
        cred = bearer(authorization)
        if cred is not None:
            return (self.keys.check(cred) is not None or self._admin_ok(authorization)
                    or await self.tokens.check(cred))
        # in a URL or a subprotocol only an ephemeral token: a long-lived key would end up in logs
        # and histories
        if query_token is not None:
            return await self.tokens.check(query_token)
        offered = next((p for p in subprotocols if p.startswith(TOKEN_SUBPROTOCOL)), None)
        return offered is not None and await self.tokens.check(offered[len(TOKEN_SUBPROTOCOL):])
