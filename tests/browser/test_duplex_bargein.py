"""Talking over the assistant in the audio duplex page, against the real system: Chromium's fake
microphone plays a WAV that asks for a long story, then says "yeah" over the reply (a
backchannel), then interrupts it for real.

Measured (printed) and bounded loosely enough for 2 loaded cores, tightly enough to fail:
- the user's speech onset → the page ducking the assistant's voice (target ≤ 300 ms; asserted ≤ 600);
- the backchannel: the voice comes back and the reply goes on (no drop);
- the interruption: the server cuts the reply and the page drops its audio, within about one unit
  after the interruption has BARGE_IN_MS of speech.

The onset is read from the page's own raw microphone levels (window.omniserve.trace: one RMS per
~50 ms block); it is taken at the start of the first block with speech in it, so the figures are
upper bounds by up to one block.
"""
from __future__ import annotations

import numpy as np
import pytest

from omniserve import knobs
from omniserve.engine.backends.embedded.duplex.tuning import BARGE_IN_MS

from .conftest import CHROMIUM, _wait_ready_on_goto, shot

pytestmark = pytest.mark.browser

STORY = "Please tell me a long story about a brave knight and a friendly dragon."
BACKCHANNEL = "yeah"
INTERRUPTION = "Wait, stop. What is two plus three?"
BACKCHANNEL_AT_S, INTERRUPTION_AT_S = 14.0, 21.0        # into the WAV (the reply starts a few seconds after 6 s)
BLOCK_MS = 50                                           # the worklet's level block
DUCK_BOUND_MS = 600


@pytest.fixture(scope="module")
def talk_over_wav(tmp_path_factory):
    import soundfile as sf

    from tests.conftest import piper_speech, silence

    def loud(pcm: np.ndarray) -> np.ndarray:
        return (0.8 * pcm / max(1e-3, float(np.abs(pcm).max()))).astype(np.float32)

    out = silence(90.0)
    for at, text in ((2.0, STORY), (BACKCHANNEL_AT_S, BACKCHANNEL), (INTERRUPTION_AT_S, INTERRUPTION)):
        pcm = loud(piper_speech(text))
        i = int(at * 16000)
        out[i:i + pcm.size] = pcm
    path = tmp_path_factory.mktemp("audio") / "talk_over.wav"
    sf.write(path, out, 16000, subtype="PCM_16")
    return path


@pytest.fixture
def talk_page(browser, system, talk_over_wav):
    b = browser.browser_type.launch(executable_path=CHROMIUM, args=[
        "--no-sandbox", "--disable-gpu", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={talk_over_wav}", "--autoplay-policy=no-user-gesture-required",
        "--disable-background-networking", "--no-first-run", "--disable-sync"])
    ctx = b.new_context(base_url=system["url"], permissions=["microphone"])
    ctx.add_init_script("""try { localStorage.setItem('omniserve.settings.audio_duplex',
        JSON.stringify({temperature: 0.1})); } catch (e) { /* about:blank */ }""")
    pg = ctx.new_page()
    _wait_ready_on_goto(pg)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.errors = errors
    yield pg
    b.close()


def onsets(levels: list[list[float]], quiet_ms: float = 1500, floor: float = 0.01) -> list[float]:
    """Start times of speech after at least ``quiet_ms`` of silence (the block's start)."""
    out, last_loud = [], None
    for t, rms in levels:
        if rms >= floor:
            if last_loud is None or t - last_loud >= quiet_ms:
                out.append(t - BLOCK_MS)
            last_loud = t
    return out


def test_talking_over_the_reply_ducks_it_a_backchannel_lets_it_go_on_an_interruption_cuts_it(talk_page):
    page = talk_page
    page.goto("/audio_duplex")
    page.fill("#system", "You are a storyteller. Tell long, detailed stories.")
    page.dispatch_event("#system", "change")
    page.click("[data-testid=start]")
    page.wait_for_function("() => window.omniserve.player.chunks > 0", timeout=300_000)
    page.wait_for_function(f"() => {{ const l = window.omniserve.trace.levels;"
                           f" return l.length && l[l.length - 1][0] - l[0][0] > {(INTERRUPTION_AT_S + 6) * 1000}; }}",
                           timeout=120_000)
    trace = page.evaluate("() => ({levels: window.omniserve.trace.levels, events: window.omniserve.trace.events,"
                          " chunks: window.omniserve.player.chunks})")
    shot(page, "duplex_bargein")
    page.click("[data-testid=stop]")
    assert not page.errors, page.errors
    t0 = trace["levels"][0][0]
    starts = onsets(trace["levels"])
    assert len(starts) >= 3, [round(s - t0) for s in starts]                # story, backchannel, interruption
    story, backchannel, interruption = starts[-3:]
    events = [(t, kind) for t, kind, *_ in trace["events"]]

    def first(kind: str, after: float) -> float:
        return next((t for t, k in events if k == kind and t >= after), float("inf"))

    duck_bc = first("duck", backchannel) - backchannel
    duck_int = first("duck", interruption) - interruption
    restore_bc = first("restore", backchannel) - backchannel
    drop = first("drop", interruption) - interruption
    chunk_ms = knobs.DUPLEX_PAGE.chunk_ms.default
    print(f"\nduck after speech onset: backchannel {duck_bc:.0f} ms, interruption {duck_int:.0f} ms "
          f"(target ≤ 300); backchannel restored after {restore_bc:.0f} ms; interruption cut and dropped after "
          f"{drop:.0f} ms = BARGE_IN_MS {BARGE_IN_MS} + {(drop - BARGE_IN_MS) / chunk_ms:.1f} units of {chunk_ms} ms")
    assert duck_bc <= DUCK_BOUND_MS and duck_int <= DUCK_BOUND_MS, events
    # the backchannel: volume back, nothing dropped, the reply went on
    assert restore_bc < interruption - backchannel
    assert first("drop", backchannel) >= interruption, events
    # the interruption: cut by the server, queued audio dropped, within a few units on loaded cores
    assert drop <= BARGE_IN_MS + 4 * chunk_ms + 1000, events
