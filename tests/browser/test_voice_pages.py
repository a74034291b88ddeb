"""Voice pages against the real system, with Chromium's fake microphone looping a spoken
question: half-duplex shows both sides of the turn and plays the reply; audio duplex gets a
spoken reply and shows unit metrics; omni sends one camera frame with each audio chunk."""
from __future__ import annotations

import pytest

from omniserve import knobs

from .conftest import shot, ws_frames

pytestmark = pytest.mark.browser


def _player(page) -> dict:
    return page.evaluate("""() => { const p = window.omniserve.player;
      return {chunks: p.chunks, received: p.receivedSec, played: p.playedSec, playing: p.playing, flushes: p.flushes}; }""")


def test_half_duplex_hears_question_and_speaks_reply(page):
    frames = ws_frames(page, ("received", "sent"))
    page.goto("/half_duplex")
    page.click("[data-testid=start]")
    page.wait_for_selector("[data-testid=turn-assistant] .text:not(:empty)", timeout=240_000)
    page.wait_for_function("""() => { const u = document.querySelector('[data-testid=turn-user] .text');
        return u && u.textContent && u.textContent !== '…'; }""", timeout=60_000)
    user = page.inner_text("[data-testid=turn-user] .text")
    assert "capital" in user.lower() or "france" in user.lower(), user
    page.wait_for_function("() => window.omniserve.player.chunks > 0 && window.omniserve.player.playedSec > 0.3", timeout=120_000)
    reply = page.inner_text("[data-testid=turn-assistant] .text")
    assert len(reply.strip()) > 1
    sent = [m for d, m in frames if d == "out"]
    assert sent[0]["type"] == "prepare" and "vad" in sent[0]["config"]
    chunks = [m for m in sent if m.get("type") == "audio_chunk"]
    import base64
    assert chunks and all(len(base64.b64decode(c["audio_base64"])) == 8000 * 4 for c in chunks)   # 0.5 s float32
    got = [m.get("type") for d, m in frames if d == "in"]
    assert "vad_state" in got and "generating" in got and "turn_done" in got, got
    shot(page, "half_duplex")
    page.click("[data-testid=stop]")
    page.wait_for_selector("[data-testid=start]:not([hidden])", timeout=30_000)
    assert not page.errors, page.errors
    # no echo feedback: no audio_chunk went out while the reply was being generated or played
    order = [(d, m.get("type")) for d, m in frames]
    gen = order.index(("in", "generating"))
    done = order.index(("in", "turn_done"))
    # (one chunk may already be on its way when "generating" arrives)
    assert order[gen + 1:done].count(("out", "audio_chunk")) <= 1, "microphone kept streaming during the reply"


def test_audio_duplex_speaks_and_shows_unit_metrics(page):
    frames = ws_frames(page, ("received", "sent"))
    page.goto("/audio_duplex")
    page.click("[data-testid=start]")
    page.wait_for_function("() => window.omniserve.player.chunks > 0", timeout=300_000)
    page.wait_for_selector("[data-testid=turn-assistant] .text:not(:empty)", timeout=60_000)
    units = int(page.inner_text("[data-testid=m-units]"))
    assert units >= 3
    assert "ms" in page.inner_text("[data-testid=m-cost]")
    assert page.inner_text("[data-testid=m-kv]").strip().isdigit()
    sent = [m for d, m in frames if d == "out"]
    page_ms = knobs.DUPLEX_PAGE.chunk_ms.default                # our pages' unit, not the protocol's 1000
    assert sent[0]["type"] == "prepare" and sent[0]["config"]["chunk_ms"] == page_ms
    chunk = next(m for m in sent if m.get("type") == "audio_chunk")
    assert "frame_base64_list" not in chunk
    import base64
    assert len(base64.b64decode(chunk["audio_base64"])) == page_ms * 16 * 4     # float32 at 16 kHz
    results = [m for d, m in frames if d == "in" and m.get("type") == "result"]
    assert any(not r["is_listen"] and r["audio_data"] for r in results)
    shot(page, "audio_duplex")
    page.click("[data-testid=pause]")
    page.wait_for_selector("[data-testid=state][data-state=paused]", timeout=30_000)
    page.click("[data-testid=resume]")
    page.wait_for_selector("[data-testid=pause]:not([hidden])", timeout=30_000)
    out = [m.get("type") for d, m in frames if d == "out"]
    assert "pause" in out and "resume" in out
    reply = page.inner_text("[data-testid=turn-assistant] .text").strip()
    page.click("[data-testid=stop]")
    page.wait_for_selector("[data-testid=start]:not([hidden])", timeout=30_000)
    assert not page.errors, page.errors
    # the recording: a spoken-reply row with its text and its slice of ai.wav
    href = page.get_attribute("#session-link", "href")
    for _ in range(10):                      # the worker writes the final recording.json as the session ends
        page.goto(href)
        page.wait_for_selector("[data-testid=tl-item]")
        rows = page.locator("[data-testid=tl-item]:has(.badge.danger)")
        if rows.count() and rows.nth(0).locator("audio").count():
            break
        page.wait_for_timeout(1000)
    assert rows.count() >= 1
    assert reply.split()[0].strip(".,!?") in rows.nth(0).inner_text()
    src = rows.nth(0).locator("audio").get_attribute("src")
    assert "/assets/ai.wav#t=" in src
    shot(page, "session_audio_duplex")


def test_omni_sends_camera_frames_with_audio_chunks(page):
    frames = ws_frames(page, ("received", "sent"))
    page.goto("/omni")
    page.click("[data-testid=start]")
    page.wait_for_function("() => window.omniserve.state.frames >= 3 && window.omniserve.metrics.units >= 2", timeout=180_000)
    sent = [m for d, m in frames if d == "out"]
    chunks = [m for m in sent if m.get("type") == "audio_chunk"]
    with_frames = [c for c in chunks if c.get("frame_base64_list")]
    assert len(with_frames) >= 3
    import base64
    jpeg = base64.b64decode(with_frames[0]["frame_base64_list"][0])
    assert jpeg[:3] == b"\xff\xd8\xff"                      # a JPEG from the (fake) camera
    assert all(len(c["frame_base64_list"]) == 1 for c in with_frames)
    assert page.evaluate("document.querySelector('[data-testid=camera]').videoWidth") > 0
    shot(page, "omni")
    page.click("[data-testid=stop]")
    page.wait_for_selector("[data-testid=start]:not([hidden])", timeout=30_000)
    assert not page.errors, page.errors


def test_denied_microphone_and_camera_show_clear_messages(browser, system):
    """A browser without the auto-accept flag denies media: each voice page says so and stays idle."""
    from .conftest import CHROMIUM, _wait_ready_on_goto

    strict = browser.browser_type.launch(executable_path=CHROMIUM, args=[
        "--no-sandbox", "--disable-gpu", "--use-fake-device-for-media-stream", "--no-first-run"])
    try:
        pg = strict.new_context(base_url=system["url"]).new_page()
        _wait_ready_on_goto(pg)
        for path, word in [("/half_duplex", "Microphone"), ("/audio_duplex", "Microphone"), ("/omni", "Camera")]:
            pg.goto(path)
            pg.click("[data-testid=start]")
            pg.wait_for_selector(".notice.error", timeout=30_000)
            assert f"{word} access was denied" in pg.inner_text(".notice.error")
            assert pg.get_attribute("[data-testid=state]", "data-state") == "idle"
            assert pg.is_visible("[data-testid=start]")
    finally:
        strict.close()
