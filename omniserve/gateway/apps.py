"""AppRegistry: which of the four modes are enabled — in ``<data_dir>/apps.json``, or, with
``gateway.redis_url``, in a shared map every gateway mirrors (``state.shared``; the file is then
only read once, as the first view).

Disabling a mode rejects new WebSockets of that mode (HTTP 403) and redirects its page; sessions
already running are left alone. ``enabled`` is read on every handshake: it is a dict lookup in
both cases, never a wait on Redis.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Optional

from ..protocol.modes import BY_APP_ID
from ..protocol.rest import AppOut
from .state.shared import SharedMaps

log = logging.getLogger(__name__)


class AppRegistry:
    def __init__(self, path: Path, shared: Optional[SharedMaps] = None) -> None:
        self._path = path
        self._enabled = {a: True for a in BY_APP_ID}
        if path.is_file():
            try:
                saved = json.loads(path.read_text())
                for a, v in saved.items():
                    if a in self._enabled and isinstance(v, bool):
                        self._enabled[a] = v
            except Exception as e:
                log.warning("ignoring %s: %s", path, e)
        self._map = None if shared is None else shared.map(
            "apps", self._changed, {a: _flag(v) for a, v in self._enabled.items()})

    def _changed(self, data: dict[str, str]) -> None:
        """The shared map changed: an app missing from it is enabled (the default)."""
        self._enabled = {a: data.get(a) != "0" for a in BY_APP_ID}

    def enabled(self, app_id: str) -> bool:
        return self._enabled.get(app_id, False)

    async def set(self, app_id: str, enabled: bool) -> AppOut:
        """``KeyError`` for an unknown app; ``StateUnavailable`` when the shared map is unreachable."""
        if app_id not in BY_APP_ID:
            raise KeyError(app_id)
        if self._map is not None:
            await self._map.write({app_id: _flag(enabled)})
        else:
            self._enabled[app_id] = enabled
            await asyncio.to_thread(self._save, dict(self._enabled))
        return self.view(app_id)

    def _save(self, enabled: dict[str, bool]) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(json.dumps(enabled, indent=2))
        os.replace(tmp, self._path)

    def view(self, app_id: str) -> AppOut:
        m = BY_APP_ID[app_id]
        return AppOut(app_id=app_id, name=m.name, path=m.page, enabled=self._enabled[app_id])

    def all(self) -> list[AppOut]:
        return [self.view(a) for a in BY_APP_ID]


def _flag(enabled: bool) -> str:
    return "1" if enabled else "0"
