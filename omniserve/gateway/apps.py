"""AppRegistry: which of the four modes are enabled, persisted in ``<data_dir>/apps.json``.

Disabling a mode rejects new WebSockets of that mode (HTTP 403) and redirects its page; sessions
already running are left alone.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from ..protocol.modes import BY_APP_ID
from ..protocol.rest import AppOut

log = logging.getLogger(__name__)


class AppRegistry:
    def __init__(self, path: Path) -> None:
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

    def enabled(self, app_id: str) -> bool:
        return self._enabled.get(app_id, False)

    def set(self, app_id: str, enabled: bool) -> AppOut:
        if app_id not in BY_APP_ID:
            raise KeyError(app_id)
        self._enabled[app_id] = enabled
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._enabled, indent=2))
        os.replace(tmp, self._path)
        return self.view(app_id)

    def view(self, app_id: str) -> AppOut:
        m = BY_APP_ID[app_id]
        return AppOut(app_id=app_id, name=m.name, path=m.page, enabled=self._enabled[app_id])

    def all(self) -> list[AppOut]:
        return [self.view(a) for a in BY_APP_ID]
