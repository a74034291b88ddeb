"""Turn-based chat page against the real system: a typed question gets a streamed text and voice
reply; Stop really stops a generation."""
from __future__ import annotations

import pytest

from .conftest import shot, ws_frames

pytestmark = pytest.mark.browser


def test_typed_question_gets_streamed_text_and_voice_reply(page):
    frames = ws_frames(page, ("received", "sent"))
    page.goto("/turnbased")
    page.wait_for_selector("#send")
    assert page.is_checked("[data-testid=tts-toggle]")          # spoken reply is on by default
    page.fill("[data-testid=chat-input]", "What is the capital of France? Answer in one short sentence.")
    page.click("[data-testid=send]")
    page.wait_for_selector("[data-testid=assistant-audio]", timeout=240_000)
    text = page.inner_text("[data-testid=assistant-text]")
    assert "paris" in text.lower(), text
    meta = page.inner_text("[data-testid=assistant-meta]")
    assert "first text" in meta and "first audio" in meta and "tokens" in meta, meta
    got = [m for d, m in frames if d == "in"]
    kinds = [m.get("type") for m in got]
    assert kinds.count("chunk") >= 2, kinds                       # streamed, not one block
    assert any(m.get("type") == "chunk" and m.get("audio_data") for m in got)
    assert kinds[-1] == "done"
    sent = [m for d, m in frames if d == "out"]
    req = sent[0]
    assert req["streaming"] is True and req["tts"]["enabled"] is True
    assert req["messages"][-1]["role"] == "user"
    player = page.evaluate("({chunks: window.omniserve.player.chunks, sec: window.omniserve.player.receivedSec})")
    assert player["chunks"] >= 1 and player["sec"] > 0.3, player
    seconds = float(page.get_attribute("[data-testid=assistant-audio]", "data-seconds"))
    assert seconds > 0.3
    assert not page.errors, page.errors
    shot(page, "turnbased")


def test_stop_button_stops_generation(page):
    frames = ws_frames(page, ("received", "sent"))
    page.goto("/turnbased")
    page.wait_for_selector("#send")
    page.uncheck("[data-testid=tts-toggle]")
    page.fill("[data-testid=chat-input]", "Write a long story about a dragon who learns to cook. Make it at least 300 words.")
    page.click("[data-testid=send]")
    page.wait_for_function("document.querySelector('[data-testid=assistant-text]')?.textContent.length > 5", timeout=240_000)
    page.click("[data-testid=stop]")
    page.wait_for_selector("[data-testid=send]:not([hidden])", timeout=60_000)
    assert {"type": "stop"} in [m for d, m in frames if d == "out"]
    done = [m for d, m in frames if d == "in" and m.get("type") == "done"]
    assert done and done[0].get("stopped") is True, done
    assert done[0]["generated_tokens"] < 250
    assert "stopped" in page.inner_text("[data-testid=assistant-meta]")
