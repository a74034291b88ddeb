"""The mode vocabulary (``omniserve.protocol.modes``): the names PROTOCOL.md documents, one table
that the gateway, the REST models and the worker read, and the web pages' copies of it."""
from __future__ import annotations

import re
from pathlib import Path

from omniserve.gateway.apps import AppRegistry
from omniserve.gateway.pages import PAGES
from omniserve.gateway.presets import PRESET_DIR, Presets
from omniserve.protocol import modes
from omniserve.protocol.rest import EtaConfig, EtaConfigUpdate

ROOT = Path(__file__).resolve().parents[2] / "omniserve"


def test_the_documented_names():
    """PROTOCOL.md: request_type values, app ids, ETA fields with their defaults."""
    assert set(modes.REQUEST_TYPES) == {"chat", "half_duplex_audio", "audio_duplex", "omni_duplex", "realtime"}
    # the addition (docs/realtime.md): an app and a queue type, served on /v1/realtime
    r = modes.REALTIME
    assert (r.request_type, r.app_id, r.eta_field, r.eta_default_s, r.worker_status) == (
        "realtime", "realtime", "eta_realtime_s", 180, "busy_realtime") and modes.REALTIME_PATH == "/v1/realtime"
    assert [m.app_id for m in modes.MODES] == ["turnbased", "half_duplex_audio", "omni", "audio_duplex"]
    assert {m.eta_field: m.eta_default_s for m in modes.MODES} == {
        "eta_chat_s": 15, "eta_half_duplex_s": 180, "eta_audio_duplex_s": 120, "eta_omni_duplex_s": 90}
    assert [m.page for m in modes.MODES] == ["/turnbased", "/half_duplex", "/omni", "/audio_duplex"]
    assert {m.endpoint for m in modes.MODES} == {"/ws/chat", "/ws/half_duplex", "/ws/duplex"}


def test_every_name_is_unique_where_it_must_be():
    for attr in ("request_type", "app_id", "page", "presets", "defaults_key", "eta_field"):
        values = [getattr(m, attr) for m in modes.MODES]
        assert len(set(values)) == len(values), attr
    for attr in ("request_type", "app_id", "eta_field", "worker_status"):
        values = [getattr(m, attr) for m in modes.ALL_MODES if m is not modes.AUDIO_DUPLEX]
        assert len(set(values)) == len(values), attr


def test_duplex_variant_from_the_session_id_prefix():
    assert modes.duplex_variant("adx_1") == modes.duplex_variant("audio_duplex_1") == "audio_duplex"
    assert modes.duplex_variant("omni_1") == modes.duplex_variant("anything") == "omni_duplex"
    assert modes.duplex_mode("adx_1") is modes.AUDIO_DUPLEX
    assert modes.DUPLEX_TYPES == {"audio_duplex", "omni_duplex"}


def test_eta_models_follow_the_table():
    cfg = EtaConfig()
    for m in modes.ALL_MODES:
        assert cfg.base_for(m.request_type) == m.eta_default_s
        assert m.eta_field in EtaConfigUpdate.model_fields
    assert set(EtaConfigUpdate.model_fields) == set(EtaConfig.model_fields)


def test_gateway_registries_follow_the_table(tmp_path):
    apps = AppRegistry(tmp_path / "apps.json").all()
    assert [(a.app_id, a.name, a.path) for a in apps] == [(m.app_id, m.name, m.page) for m in modes.ALL_MODES]
    assert modes.REALTIME.page == "" and modes.REALTIME not in modes.MODES    # no page of ours
    for m in modes.MODES:
        assert PAGES[m.page] == (m.page_file, m.app_id)
        assert (ROOT / "web" / m.page_file).is_file()
        assert (PRESET_DIR / f"{m.presets}.yaml").is_file()
    assert set(Presets().listing()) == {m.presets for m in modes.MODES}


def test_worker_statuses_and_session_types_are_the_table():
    from omniserve.worker.state import Status

    assert {s.value for s in Status} == set(modes.WORKER_STATUSES)
    # every request type the worker names for a session (read from the source: the worker's
    # session classes may import what this test does not need)
    named = set()
    for f in (ROOT / "worker").glob("*.py"):
        named |= set(re.findall(r'request_type(?:\s*:\s*str)?\s*=\s*"(\w+)"', f.read_text()))
    assert named and named <= set(modes.REQUEST_TYPES), named


def test_web_pages_copy_the_table():
    layout = (ROOT / "web/static/js/layout.js").read_text()
    block = re.search(r"export const MODES = \[(.*?)\];", layout, re.S).group(1)
    assert re.findall(r'app: "(\w+)", href: "([^"]+)"', block) == [(m.app_id, m.page) for m in modes.MODES]
    presets = (ROOT / "web/static/js/presets.js").read_text()
    aliases = re.search(r"const MODE_ALIASES = \{(.*?)\};", presets, re.S).group(1)
    assert re.findall(r"^\s*(\w+):", aliases, re.M) == [m.presets for m in modes.MODES]
    # the one preset name that is not its /api/frontend_defaults key
    assert [(m.presets, m.defaults_key) for m in modes.MODES if m.presets != m.defaults_key] == [("turnbased", "chat")]
    assert 'this.mode === "turnbased" ? "chat" : this.mode' in presets
