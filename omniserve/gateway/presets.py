"""System-prompt presets per mode, read from ``omniserve/presets/<mode>.yaml`` in the package
(``<mode>`` is the mode table's ``presets`` name: turnbased, half_duplex, omni, audio_duplex).

Each preset may name a reference-voice WAV in the same folder; ``default_voice.wav`` is the
default voice (a short espeak-ng recording, committed, < 100 KB).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import yaml

from ..protocol.modes import MODES

log = logging.getLogger(__name__)

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"
DEFAULT_VOICE = PRESET_DIR / "default_voice.wav"
PRESET_MODES = tuple(m.presets for m in MODES)


class Presets:
    def __init__(self, folder: Path = PRESET_DIR) -> None:
        self.folder = folder
        self._by_mode: dict[str, list[dict]] = {m: [] for m in PRESET_MODES}
        for mode in PRESET_MODES:
            f = folder / f"{mode}.yaml"
            if not f.is_file():
                continue
            try:
                doc = yaml.safe_load(f.read_text()) or {}
                for p in doc.get("presets") or []:
                    if isinstance(p, dict) and isinstance(p.get("id"), str):
                        self._by_mode[mode].append(p)
            except Exception as e:
                log.warning("bad presets file %s: %s", f, e)

    def listing(self) -> dict[str, list[dict]]:
        return {m: [{"id": p["id"], "name": p.get("name", p["id"]), "system_prompt": p.get("system_prompt", ""),
                     "has_audio": self.audio_path(m, p["id"]) is not None,
                     "audio_url": f"/api/presets/{m}/{p['id']}/audio" if self.audio_path(m, p["id"]) else None}
                    for p in ps] for m, ps in self._by_mode.items()}

    def audio_path(self, mode: str, preset_id: str) -> Optional[Path]:
        for p in self._by_mode.get(mode, []):
            if p["id"] == preset_id and isinstance(p.get("ref_audio"), str):
                path = (self.folder / p["ref_audio"]).resolve()
                if path.is_relative_to(self.folder.resolve()) and path.is_file():
                    return path
        return None

    def first_prompt(self, mode: str) -> str:
        ps = self._by_mode.get(mode) or []
        return ps[0].get("system_prompt", "") if ps else ""
