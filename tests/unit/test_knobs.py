"""One source of truth for the per-session settings (``omniserve.knobs``): the wire models, the
engine's dataclasses, the engine's checks, the web pages' defaults and their form limits all say
the same — every default equal, every bound equal, a value just past a bound refused by both the
wire and the engine, and a value on it accepted by both."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from omniserve import knobs
from omniserve.engine import checks
from omniserve.engine.api import DuplexSettings, EngineInputError, GenerationParams, VadSettings
from omniserve.protocol.messages import (ChatRequest, DuplexConfig, GenerationConfig, HalfDuplexConfig,
                                         HDGenerationConfig, HDSessionConfig, VADConfig)

ROOT = Path(__file__).resolve().parents[2] / "omniserve"
JS = ROOT / "web" / "static" / "js"

# (wire model, knob group, engine dataclass or None, the engine check building it from field values)
SHAPES: list[tuple[type[BaseModel], knobs.Group, Any, Callable[[dict], Any]]] = [
    (GenerationConfig, knobs.GENERATION, GenerationParams, lambda kw: checks.check_generation(GenerationParams(**kw))),
    (HDGenerationConfig, knobs.HALF_DUPLEX_GENERATION, GenerationParams,
     lambda kw: checks.check_generation(GenerationParams(**kw))),
    (VADConfig, knobs.VAD, VadSettings, lambda kw: checks.check_vad(VadSettings(**kw))),
    (DuplexConfig, knobs.DUPLEX, DuplexSettings, lambda kw: checks.check_duplex(DuplexSettings(**kw))),
    (HDSessionConfig, knobs.HALF_DUPLEX_SESSION, None, lambda kw: None),   # wire only: the worker caps it
]
IDS = [m.__name__ for m, *_ in SHAPES]


def _wire_bounds(model: type[BaseModel], name: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for m in model.model_fields[name].metadata:
        for k in ("ge", "gt", "le", "lt"):
            if getattr(m, k, None) is not None:
                out[k] = getattr(m, k)
    return out


def _outside(knob: knobs.Knob) -> list[Any]:
    """Values just past each bound (integers by one, floats by a hair)."""
    step = 1 if isinstance(knob.default, int) and not isinstance(knob.default, bool) else 1e-6
    out = []
    if knob.ge is not None:
        out.append(knob.ge - step)
    if knob.gt is not None:
        out.append(knob.gt)
    if knob.le is not None:
        out.append(knob.le + step)
    if knob.lt is not None:
        out.append(knob.lt)
    if knob.choices:
        out.append(max(knob.choices) + 1 if isinstance(knob.default, (int, float)) else "xx")
    return out


def _on(knob: knobs.Knob) -> list[Any]:
    """Values on each closed bound, and just inside each open one."""
    step = 1 if isinstance(knob.default, int) and not isinstance(knob.default, bool) else 1e-6
    out = [knob.default, *knob.choices]
    for v, inc in ((knob.ge, 0), (knob.gt, step), (knob.le, 0), (knob.lt, -step)):
        if v is not None:
            out.append(v + inc)
    return out


@pytest.mark.parametrize("model,group,engine,check", SHAPES, ids=IDS)
def test_wire_and_engine_state_the_same_defaults_and_bounds(model, group, engine, check):
    assert tuple(model.model_fields) == group.names()
    for name, knob in group.items():
        assert model.model_fields[name].default == knob.default, name
        assert _wire_bounds(model, name) == knob.bounds(), name
        if engine is not None:
            assert {f.name: f.default for f in dataclasses.fields(engine)}[name] == knob.default, name


@pytest.mark.parametrize("model,group,engine,check", SHAPES, ids=IDS)
def test_a_value_just_outside_the_range_is_refused_by_wire_and_engine(model, group, engine, check):
    for name, knob in group.items():
        for bad in _outside(knob):
            with pytest.raises(ValidationError):
                model.model_validate({name: bad})
            if engine is not None:
                with pytest.raises(EngineInputError, match=name):
                    check({name: bad})
        for good in _on(knob):
            model.model_validate({name: good})
            check({name: good})


def test_engine_dataclasses_keep_their_fields_and_positional_order():
    assert [f.name for f in dataclasses.fields(GenerationParams)] == [
        "max_new_tokens", "temperature", "top_p", "top_k", "length_penalty", "language"]
    assert [f.name for f in dataclasses.fields(VadSettings)] == [
        "threshold", "min_speech_duration_ms", "min_silence_duration_ms", "speech_pad_ms",
        "end_of_turn"]   # the engine's own (not a wire knob): "semantic" | "silence"
    assert tuple(f.name for f in dataclasses.fields(DuplexSettings)) == knobs.DUPLEX.names() + ("omni",)
    assert GenerationParams(1, 0.5, 0.9, 10, 1.0) == GenerationParams(max_new_tokens=1, temperature=0.5, top_p=0.9,
                                                                       top_k=10, length_penalty=1.0)


def test_shared_sampling_knobs_are_one_statement():
    for name in ("temperature", "top_p", "top_k", "length_penalty"):
        assert getattr(knobs.DUPLEX, name) is getattr(knobs.GENERATION, name)
    for name, knob in knobs.HALF_DUPLEX_GENERATION.items():
        assert knob is getattr(knobs.GENERATION, name)


def test_engine_messages_name_the_range():
    with pytest.raises(EngineInputError, match=r"max_new_tokens must be between 1 and 4096, got 4097"):
        checks.check_generation(GenerationParams(max_new_tokens=4097))
    with pytest.raises(EngineInputError, match=r"VAD threshold must be in \(0, 1\), got nan"):
        checks.check_vad(VadSettings(threshold=float("nan")))
    with pytest.raises(EngineInputError, match=r"duplex sample_rate must be 16000, got 8000"):
        checks.check_duplex(DuplexSettings(sample_rate=8000))
    with pytest.raises(EngineInputError, match=r"top_k must be between 0 and 1000, got 'x'"):
        checks.check_generation(GenerationParams(top_k="x"))  # type: ignore[arg-type]


# ---------------------------------------------------------------- web pages and presets

def _settings_literal(path: Path) -> dict[str, Any]:
    """The defaults object of ``new Settings(<page>, {...})`` in a page script."""
    text = path.read_text()
    m = re.search(r"new Settings\([^,]+,\s*\{(.*?)\}\s*\)", text, re.S)
    assert m, path
    out: dict[str, Any] = {}
    for key, raw in re.findall(r"(\w+)\s*:\s*([^,\n]+)", m.group(1)):
        raw = raw.strip()
        out[key] = True if raw == "true" else False if raw == "false" else raw.strip("\"'") if raw[0] in "\"'" \
            else float(raw) if "." in raw else int(raw)
    return out


# page script -> {its settings key: (knob group, knob name)}
PAGE_KNOBS = {
    "pages/turnbased.js": {"max_new_tokens": (knobs.GENERATION, "max_new_tokens"),
                           "temperature": (knobs.GENERATION, "temperature"),
                           "top_p": (knobs.GENERATION, "top_p"), "top_k": (knobs.GENERATION, "top_k")},
    "pages/half_duplex.js": {"vad_threshold": (knobs.VAD, "threshold"),
                             **{n: (knobs.VAD, n) for n in knobs.VAD.names() if n != "threshold"},
                             **{n: (knobs.HALF_DUPLEX_GENERATION, n) for n in knobs.HALF_DUPLEX_GENERATION.names()},
                             "timeout_s": (knobs.HALF_DUPLEX_SESSION, "timeout_s")},
    "duplex-page.js": {**{n: (knobs.DUPLEX, n) for n in knobs.DUPLEX.names() if n != "sample_rate"},
                       "chunk_ms": (knobs.DUPLEX_PAGE, "chunk_ms")},   # our pages' shorter unit
}
# page script -> its HTML form
PAGE_HTML = {"pages/turnbased.js": "turnbased.html", "pages/half_duplex.js": "half_duplex.html",
             "duplex-page.js": "duplex.html"}


@pytest.mark.parametrize("script", list(PAGE_KNOBS))
def test_web_page_defaults_are_the_knobs(script):
    got = _settings_literal(JS / script)
    for key, (group, name) in PAGE_KNOBS[script].items():
        assert key in got, (script, key)
        assert got[key] == getattr(group, name).default, (script, key, got[key])


def test_web_page_flags_match_the_wire_defaults():
    assert _settings_literal(JS / "pages/turnbased.js")["streaming"] == ChatRequest.model_fields["streaming"].default
    assert _settings_literal(JS / "pages/half_duplex.js")["tts"] == HalfDuplexConfig().tts.enabled


@pytest.mark.parametrize("script", list(PAGE_KNOBS))
def test_web_form_limits_stay_inside_the_ranges(script):
    """A number field's min/max can only narrow a knob's range (the page never sends a value the
    wire refuses)."""
    html = (ROOT / "web" / PAGE_HTML[script]).read_text()
    names = dict(PAGE_KNOBS[script])
    seen = 0
    for tag in re.findall(r"<input[^>]*data-setting=\"\w+\"[^>]*>", html):
        key = re.search(r'data-setting="(\w+)"', tag).group(1)
        if key not in names or 'type="number"' not in tag:
            continue
        seen += 1
        group, name = names[key]
        knob = getattr(group, name)
        lo = re.search(r'\bmin="([^"]+)"', tag)
        hi = re.search(r'\bmax="([^"]+)"', tag)
        if lo:
            assert knob.accepts(float(lo.group(1))), (key, "min", lo.group(1), knob.describe())
        if hi:
            assert knob.accepts(float(hi.group(1))), (key, "max", hi.group(1), knob.describe())
    assert seen >= 4, script


def test_presets_carry_prompts_and_voices_only():
    """Presets state no settings of their own, so they cannot disagree with the knobs."""
    files = sorted((ROOT / "presets").glob("*.yaml"))
    assert files
    for f in files:
        for p in yaml.safe_load(f.read_text())["presets"]:
            assert set(p) <= {"id", "name", "system_prompt", "ref_audio"}, (f.name, p)


def test_the_segmenter_default_is_the_knob():
    import inspect

    from omniserve.engine.backends.embedded.components.vad import VadSegmenter

    params = inspect.signature(VadSegmenter).parameters
    for name in knobs.VAD.names():
        assert params[name].default == getattr(knobs.VAD, name).default, name
