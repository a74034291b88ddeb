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
    page.wait_for_function("() => document.querySelector('[data-testid=assistant-text]')?.textContent.length > 5", timeout=240_000)
    page.click("[data-testid=stop]")
    page.wait_for_selector("[data-testid=send]:not([hidden])", timeout=60_000)
    assert {"type": "stop"} in [m for d, m in frames if d == "out"]
    done = [m for d, m in frames if d == "in" and m.get("type") == "done"]
    assert done and done[0].get("stopped") is True, done
    assert done[0]["generated_tokens"] < 250
    assert "stopped" in page.inner_text("[data-testid=assistant-meta]")


def test_push_to_talk_voice_question(page):
    """The fake microphone (a looped WAV with the question) is recorded by the AudioWorklet at
    16 kHz and sent as an audio item; the model answers the spoken question."""
    frames = ws_frames(page, ("sent",))
    page.goto("/turnbased")
    page.wait_for_selector("#send")
    page.uncheck("[data-testid=tts-toggle]")
    box = page.locator("#ptt").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.wait_for_timeout(6500)                      # 2 s silence + the question + a little silence
    page.mouse.up()
    page.wait_for_selector("#attachments .chip[data-kind=audio]")
    page.click("[data-testid=send]")
    page.wait_for_function("() => document.querySelector('[data-testid=assistant-meta]')?.textContent.includes('tokens')",
                           timeout=240_000)
    req = next(m for d, m in frames if d == "out" and "messages" in m)
    item = next(i for i in req["messages"][-1]["content"] if i["type"] == "audio")
    import base64
    n = len(base64.b64decode(item["data"])) // 4
    assert item["sample_rate"] == 16000 and 5.5 * 16000 < n < 8 * 16000, n
    text = page.inner_text("[data-testid=assistant-text]").lower()
    assert "paris" in text or "france" in text, text
    assert not page.errors, page.errors


def test_image_attachment_is_sent_and_described(page, tmp_path):
    from tests.conftest import text_image

    img = tmp_path / "sign.png"
    img.write_bytes(text_image("OPEN 24 HOURS"))
    frames = ws_frames(page, ("sent",))
    page.goto("/turnbased")
    page.wait_for_selector("#send")
    page.uncheck("[data-testid=tts-toggle]")
    page.set_input_files("#pick-image", str(img))
    page.wait_for_selector("#attachments .chip[data-kind=image] img")
    page.fill("[data-testid=chat-input]", "What text is written in this image?")
    page.click("[data-testid=send]")
    page.wait_for_function("() => document.querySelector('[data-testid=assistant-meta]')?.textContent.includes('tokens')",
                           timeout=240_000)
    req = next(m for d, m in frames if d == "out" and "messages" in m)
    kinds = [i["type"] for i in req["messages"][-1]["content"]]
    assert kinds == ["text", "image"], kinds
    assert page.locator("[data-testid=msg-user] img").count() == 1
    text = page.inner_text("[data-testid=assistant-text]").lower()
    assert "open" in text or "24" in text, text
    shot(page, "turnbased_image")
    assert not page.errors, page.errors
