"""Home, admin and session viewer against the real system: the admin turns a mode off and the
home page hides it (its page redirects with a notice); a recorded chat shows in the viewer."""
from __future__ import annotations

import re

import httpx
import pytest

from .conftest import _wait_ready_on_goto, shot

pytestmark = pytest.mark.browser


def test_admin_disables_mode_and_home_hides_it(page, system):
    page.goto("/")
    page.wait_for_selector("[data-testid=mode-audio_duplex]")
    assert page.locator("#modes .mode-card").count() == 4
    shot(page, "home")
    page.goto("/admin")
    page.fill("[data-testid=admin-token]", "wrong-token")
    page.click("[data-testid=admin-login]")
    page.wait_for_selector(".notice.error")
    page.fill("[data-testid=admin-token]", system["token"])
    page.click("[data-testid=admin-login]")
    page.wait_for_selector("[data-testid=workers] tbody tr td .badge")      # worker state shown
    page.wait_for_selector("[data-testid=toggle-audio_duplex]", state="attached")
    try:
        page.locator("[data-testid=toggle-audio_duplex]").locator("xpath=..").click()   # the visible switch
        assert not page.is_checked("[data-testid=toggle-audio_duplex]")
        page.wait_for_selector(".notice.ok")
        shot(page, "admin")
        assert httpx.get(system["url"] + "/api/apps").json()[3]["enabled"] is False
        page.goto("/")
        page.wait_for_selector("[data-testid=mode-turnbased]")
        assert page.locator("[data-testid=mode-audio_duplex]").count() == 0
        assert page.locator("#modes .mode-card").count() == 3
        assert page.locator("nav a[data-app=audio_duplex]").is_hidden()
        page.goto("/audio_duplex")                                       # redirected with a notice
        page.wait_for_selector(".notice.warn")
        assert "disabled=audio_duplex" in page.url
        assert "Audio duplex" in page.inner_text(".notice.warn")
    finally:
        r = httpx.put(system["url"] + "/api/admin/apps/audio_duplex", json={"enabled": True},
                      headers={"Authorization": f"Bearer {system['token']}"})
        assert r.status_code == 200
    assert not page.errors, page.errors


def test_disabled_mode_refuses_a_session_with_a_clear_message(page, system):
    auth = {"Authorization": f"Bearer {system['token']}"}
    page.goto("/audio_duplex")
    page.wait_for_selector("[data-testid=start]")
    try:
        assert httpx.put(system["url"] + "/api/admin/apps/audio_duplex", json={"enabled": False}, headers=auth).status_code == 200
        page.click("[data-testid=start]")
        page.wait_for_selector(".notice.error", timeout=30_000)
        assert "refused" in page.inner_text(".notice.error")
        page.wait_for_selector("[data-testid=start]:not([hidden])")
    finally:
        httpx.put(system["url"] + "/api/admin/apps/audio_duplex", json={"enabled": True}, headers=auth)


def test_language_switch_persists(page):
    page.goto("/")
    page.wait_for_selector("[data-testid=mode-turnbased]")
    page.select_option(".lang-select", "zh")
    page.wait_for_function("() => document.querySelector('nav a[data-app=turnbased]').textContent === '对话'")
    page.reload()
    page.wait_for_selector("[data-testid=mode-turnbased]")
    assert page.inner_text("h1") == "和你的助手聊聊"
    shot(page, "home_zh")
    page.select_option(".lang-select", "en")
    page.wait_for_function("() => document.querySelector('h1').textContent === 'Talk to your assistant'")


def test_session_viewer_shows_recorded_chat(page, system):
    page.goto("/turnbased")
    page.fill("[data-testid=chat-input]", "Name one planet of the solar system.")
    page.click("[data-testid=send]")
    link = page.wait_for_selector("[data-testid=msg-assistant] a.badge", timeout=240_000)
    href = link.get_attribute("href")
    sid = re.fullmatch(r"/s/(.+)", href).group(1)
    page.goto("/")
    page.wait_for_selector(f"#recent a[href='{href}']")                 # remembered in recent sessions
    page.goto(href)
    page.wait_for_selector("[data-testid=tl-item]")
    assert page.inner_text("[data-testid=session-id]") == sid
    meta = page.inner_text("[data-testid=session-meta]")
    assert "chat" in meta.lower()
    items = page.locator("[data-testid=tl-item]")
    assert items.count() >= 2
    assert "planet" in items.nth(0).inner_text().lower()
    page.wait_for_selector("[data-testid=tl-item] audio")
    src = page.get_attribute("[data-testid=tl-item] audio", "src")
    audio = httpx.get(system["url"] + src)
    assert audio.status_code == 200 and audio.content[:4] == b"RIFF"
    dl = httpx.get(system["url"] + page.get_attribute("[data-testid=download]", "href"))
    assert dl.status_code == 200 and dl.content[:2] == b"PK"
    page.fill("[data-testid=comment]", "Nice <b>answer</b>")
    page.select_option("#rating", "5")
    page.click("#comment-form button[type=submit]")
    page.wait_for_selector("#comments .turn")
    assert "Nice <b>answer</b>" in page.inner_text("#comments")         # shown as text, not HTML
    assert page.locator("#comments b").count() == 0
    shot(page, "session")
    assert not page.errors, page.errors


def test_uploaded_voice_is_listed_and_used_for_the_spoken_reply(page, system, tmp_path):
    import base64

    import soundfile as sf

    from tests.conftest import piper_speech

    wav = tmp_path / "my voice.wav"
    sf.write(wav, piper_speech("Hello, this is my reference voice for the test.", rate=22050), 22050, subtype="PCM_16")
    page.goto("/admin")
    page.fill("[data-testid=admin-token]", system["token"])
    page.click("[data-testid=admin-login]")
    page.wait_for_selector("[data-testid=voices] tbody tr")
    page.fill("#voice-name", "Tester voice (1)")
    page.set_input_files("#voice-file", str(wav))
    page.click("#voice-form button[type=submit]")
    row = page.wait_for_selector("[data-testid=voices] tbody tr:has-text('Tester voice (1)')")
    assert row.query_selector("audio") is not None
    voice_id = next(v["id"] for v in httpx.get(system["url"] + "/api/assets/ref_audio").json() if v["name"] == "Tester voice (1)")
    try:
        frames = []
        page.on("websocket", lambda ws: ws.on("framesent", lambda f: frames.append(f)))
        page.goto("/turnbased")
        page.wait_for_selector(f"#voice option[value='{voice_id}']", state="attached")
        page.select_option("#voice", voice_id)
        page.fill("[data-testid=chat-input]", "Say hello.")
        page.click("[data-testid=send]")
        page.wait_for_selector("[data-testid=assistant-audio]", timeout=240_000)
        import json
        req = json.loads(frames[0])
        pcm = base64.b64decode(req["tts"]["ref_audio_data"])
        seconds = len(pcm) / 4 / 16000
        assert abs(seconds - sf.info(wav).duration) < 0.3, seconds              # decoded to 16 kHz float32
    finally:
        r = httpx.delete(f"{system['url']}/api/assets/ref_audio/{voice_id}", headers={"Authorization": f"Bearer {system['token']}"})
        assert r.status_code == 200
    assert not page.errors, page.errors


def test_queue_position_and_countdown_while_the_worker_is_busy(browser, system):
    """One worker: a half-duplex session holds it, so a chat request waits in the queue and the
    chat page shows its position and a countdown; when the session stops, the chat goes on."""
    ctx = browser.new_context(base_url=system["url"], viewport={"width": 1280, "height": 860}, permissions=["microphone"])
    try:
        voice, chat = ctx.new_page(), ctx.new_page()
        _wait_ready_on_goto(voice)
        _wait_ready_on_goto(chat)
        voice.goto("/half_duplex")
        voice.click("[data-testid=start]")
        voice.wait_for_selector("[data-testid=state][data-state=listening]", timeout=60_000)
        chat.goto("/turnbased")
        chat.uncheck("[data-testid=tts-toggle]")
        chat.fill("[data-testid=chat-input]", "Say OK.")
        chat.click("[data-testid=send]")
        chat.wait_for_selector("[data-testid=queue-position]", timeout=30_000)
        assert "#1" in chat.inner_text("[data-testid=queue-position]")
        assert "left" in chat.inner_text("#queue") or "moment" in chat.inner_text("#queue")
        shot(chat, "turnbased_queued")
        voice.click("[data-testid=stop]")
        chat.wait_for_selector("#queue", state="hidden", timeout=60_000)
        chat.wait_for_function("() => document.querySelector('[data-testid=assistant-meta]')?.textContent.includes('tokens')",
                               timeout=240_000)
    finally:
        ctx.close()
