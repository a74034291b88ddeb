"""Browser tests: the real system (`omniserve up --workers 1 --http`, embedded CPU engine) on a free
loopback port, driven by Debian's headless Chromium through Playwright.

Chromium gets a fake camera (built in) and a fake microphone that loops a WAV with a spoken
question (Piper speech, padded with silence). Screenshots go to ``test-artifacts/`` (gitignored).
Never run ``playwright install``: the browser is /usr/bin/chromium.
"""
from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("OMNISERVE_CHROMIUM", "/usr/bin/chromium")
QUESTION = "What is the capital of France?"
READY_TIMEOUT_S = 900.0

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _free_port_pair() -> int:
    """A port p with p+1 also free (room for the worker's port range)."""
    for _ in range(50):
        p = _free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p + 1))
                return p
            except OSError:
                continue
    raise RuntimeError("no free port pair")


@pytest.fixture(scope="session")
def system(tmp_path_factory):
    """URL, admin token and data dir of a running `omniserve up` (one worker, plain HTTP)."""
    if not (ROOT / "omniserve" / "launcher.py").is_file():
        pytest.skip("omniserve/launcher.py is missing: `omniserve up` is not available yet")
    data = tmp_path_factory.mktemp("omniserve-data")
    port, wport = _free_port(), _free_port_pair()
    token = secrets.token_urlsafe(18)
    env = dict(os.environ, OMNISERVE_GATEWAY__ADMIN_TOKEN=token, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    log = (data / "up.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "omniserve.cli", "up", "--workers", "1", "--http", "--host", "127.0.0.1",
         "--port", str(port), "--data-dir", str(data), "--worker-base-port", str(wport)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    try:
        with httpx.Client(timeout=3, trust_env=False) as c:
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"omniserve up exited ({proc.returncode}):\n{(data / 'up.log').read_text()[-3000:]}")
                try:
                    st = c.get(url + "/status").json()
                    if st.get("idle_workers", 0) >= 1:
                        break
                except (httpx.HTTPError, ValueError):
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"system not ready after {READY_TIMEOUT_S:.0f} s:\n{(data / 'up.log').read_text()[-3000:]}")
                time.sleep(1)
        yield {"url": url, "token": token, "data_dir": data}
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(5)
        log.close()


@pytest.fixture(scope="session")
def question_wav(tmp_path_factory) -> Path:
    """16 kHz mono WAV: 2 s silence + the spoken question + 8 s silence (Chromium loops it)."""
    import soundfile as sf

    from tests.conftest import piper_speech, silence

    speech = piper_speech(QUESTION, rate=16000)
    pcm = np.concatenate([silence(2.0), 0.8 * speech / max(1e-3, float(np.abs(speech).max())), silence(8.0)])
    path = tmp_path_factory.mktemp("audio") / "question.wav"
    sf.write(path, pcm.astype(np.float32), 16000, subtype="PCM_16")
    return path


@pytest.fixture(scope="session")
def browser(question_wav):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={question_wav}", "--autoplay-policy=no-user-gesture-required",
            "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync",
        ])
        yield b
        b.close()


class PageErrors(list):
    """Uncaught page errors collected during a test (a broken module shows up here)."""


@pytest.fixture
def page(browser, system):
    ctx = browser.new_context(viewport={"width": 1280, "height": 860}, base_url=system["url"],
                              permissions=["microphone", "camera"])
    # low temperature: the tests check what the real model says, so keep sampling near-greedy
    ctx.add_init_script("""try { for (const page of ["turnbased", "half_duplex", "omni", "audio_duplex"]) {
        const key = `omniserve.settings.${page}`;
        if (!localStorage.getItem(key)) localStorage.setItem(key, JSON.stringify({temperature: 0.1}));
    } } catch (e) { /* about:blank has no storage */ }""")
    pg = ctx.new_page()
    _wait_ready_on_goto(pg)
    errors = PageErrors()
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.errors = errors
    yield pg
    ctx.close()


def _wait_ready_on_goto(pg) -> None:
    """After each goto, wait for <body data-ready>: the page module has bound its controls."""
    goto = pg.goto

    def goto_ready(url, **kw):
        res = goto(url, **kw)
        pg.wait_for_selector("body[data-ready]", state="attached", timeout=30_000)
        return res

    pg.goto = goto_ready


def shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.evaluate("window.scrollTo(0, 0)")       # the sticky header belongs at the top of a full-page shot
    page.screenshot(path=str(path), full_page=True)
    return path


def ws_frames(page, kinds: tuple[str, ...] = ("received",)) -> list:
    """Collects WebSocket text frames the page sends/receives: list of (direction, dict)."""
    import json

    frames: list = []

    def on_ws(ws):
        if "received" in kinds:
            ws.on("framereceived", lambda f: frames.append(("in", _load(json, f))))
        if "sent" in kinds:
            ws.on("framesent", lambda f: frames.append(("out", _load(json, f))))

    page.on("websocket", on_ws)
    return frames


def _load(json, f):
    try:
        return json.loads(f if isinstance(f, str) else f.get("payload", f))
    except Exception:
        return {}
