"""Worker lifecycle: /health while loading, a failed engine load, and the recorder's bounds and
file layout (the contract the gateway reads, docs/worker.md)."""
from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time

import numpy as np
import pytest
import soundfile as sf
from websockets.exceptions import ConnectionClosed

from omniserve.worker.recorder import NullRecorder, Recorder, open_recorder

from .conftest import TEST_ENV, connect, recv, start_worker, stop_worker, wait_health


def test_health_answers_while_loading(real_worker):
    """The worker listens before the engine is loaded: /health said 'loading', then 'idle'."""
    assert real_worker.seen_states[0] == "loading" and real_worker.seen_states[-1] == "idle", real_worker.seen_states


class _FakeGateway(http.server.BaseHTTPRequestHandler):
    """Records worker registrations (the real route is the gateway's POST /api/workers/register)."""

    calls: list = []

    def do_POST(self) -> None:  # noqa: N802 (http.server naming)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _FakeGateway.calls.append((self.path, self.headers.get("Authorization"), json.loads(body)))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *a) -> None:
        pass


async def test_failed_engine_load_leaves_worker_in_error_and_it_registers(tmp_path):
    gw = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeGateway)
    threading.Thread(target=gw.serve_forever, daemon=True).start()
    env = dict(TEST_ENV, OMNISERVE_ENGINE__LLM__MODEL="no-such-model",
               OMNISERVE_WORKER__GATEWAY_URL=f"http://127.0.0.1:{gw.server_address[1]}",
               OMNISERVE_WORKER__REGISTER_TOKEN="s3cret")
    h = start_worker(tmp_path, env)
    try:
        hl = wait_health(h, {"error"}, 120)
        assert hl["model_loaded"] is False and "no-such-model" in hl["error"], hl
        ws = await connect(h.ws + "/ws/chat", h.token)
        m = await recv(ws, 10)
        assert m["type"] == "error" and m["error"].startswith("Worker error:"), m
        with pytest.raises(ConnectionClosed):
            await recv(ws, 10)
        assert ws.close_code == 1013
        assert h.proc.poll() is None, "a load failure must not end the process"
        for _ in range(50):
            if _FakeGateway.calls:
                break
            await asyncio.sleep(0.1)
        path, auth, body = _FakeGateway.calls[0]
        # a protocol.worker.WorkerRegister: its URL, the heartbeat's TTL and its slots
        assert path == "/api/workers/register" and auth == "Bearer s3cret"
        assert body == {"url": h.base, "ttl_s": 90.0, "slots": 1}, body
    finally:
        stop_worker(h)
        gw.shutdown()


def _finish(rec: Recorder, reason: str = "stop") -> dict:
    assert rec.finish(reason).wait(10)
    return json.loads((rec.dir / "meta.json").read_text())


def test_recording_cap_stops_media_and_says_so(tmp_path):
    rec = Recorder(tmp_path, "half_duplex_audio", "hd_x", worker_index=0, backend="embedded", max_bytes=100_000)
    assert len(rec.id) >= 22 and rec.dir == tmp_path / "sessions" / rec.id
    assert rec.write_wav("user_turn_000.wav", np.zeros(16000, np.float32), 16000) == "user_turn_000.wav"
    assert rec.write_wav("user_turn_001.wav", np.zeros(48000, np.float32), 16000) is None  # over the cap
    rec.add_event({"turn_index": 0})
    meta = _finish(rec)
    assert meta["audio_truncated"] is True and meta["recorded_bytes"] <= 100_000
    assert meta["status"] == "complete" and meta["label"] == "hd_x" and "user_turn_000.wav" in meta["files"]
    assert sf.info(str(rec.dir / "user_turn_000.wav")).frames == 16000
    assert not (rec.dir / "user_turn_001.wav").exists()
    assert not [p for p in rec.dir.iterdir() if p.name.startswith(".") or p.name.endswith(".part")]
    assert json.loads((rec.dir / "recording.json").read_text())["timeline"] == [{"turn_index": 0}]


def test_duplex_replay_places_both_voices_on_one_timeline(tmp_path):
    rec = Recorder(tmp_path, "audio_duplex", "adx_x", worker_index=0, backend="embedded", max_bytes=10**8)
    user_tone = (0.5 * np.sin(np.arange(16000) * 0.05)).astype(np.float32)
    ai_tone = np.full(12000, 0.25, np.float32)
    offs = []
    for i in range(3):  # unit i arrives at t = i+1 s; AI answers unit 1, sent at 2.2 s
        ai = ai_tone if i == 1 else None
        offs.append(rec.duplex_unit(user_tone, i + 1.0, ai, i + 1.2))
    _finish(rec)
    replay, sr = sf.read(rec.dir / "replay.wav")
    assert sr == 24000 and replay.shape == (24000 * 3, 2)
    assert offs[1]["replay_ai_start_s"] == pytest.approx(2.2)
    start = int(2.2 * 24000)
    assert np.allclose(replay[start + 10:start + 11990, 1], 0.25, atol=1e-3)
    assert np.abs(replay[:start - 10, 1]).max() < 1e-3           # the AI is silent before it answers
    assert offs[2]["user_offset"] == 32000 and offs[0]["replay_user_start_s"] == pytest.approx(0.0)
    user, sr = sf.read(rec.dir / "user.wav")
    assert sr == 16000 and len(user) == 48000
    ai, sr = sf.read(rec.dir / "ai.wav")
    assert sr == 24000 and len(ai) == 12000


def test_recording_off_writes_nothing(tmp_path):
    rec = open_recorder(False, str(tmp_path), "chat", None, worker_index=0, backend="embedded", max_bytes=1)
    assert isinstance(rec, NullRecorder) and rec.id is None
    assert rec.write_wav("x.wav", np.zeros(10, np.float32), 16000) is None
    assert rec.finish("done").is_set()
    assert not (tmp_path / "sessions").exists()


@pytest.fixture(scope="module")
def short_worker(tmp_path_factory):
    """A second real worker whose sessions may last only 3 s (engine load is a few seconds)."""
    h = start_worker(tmp_path_factory.mktemp("short"), dict(TEST_ENV, OMNISERVE_WORKER__MAX_SESSION_S="3",
                                                                        OMNISERVE_WORKER__PREPARE_WAIT_S="1.5"))
    try:
        wait_health(h, {"idle"}, 600)
        yield h
    finally:
        stop_worker(h)


@pytest.mark.parametrize("path, prepare", [
    ("/ws/half_duplex/hd_long", {"type": "prepare", "config": {"session": {"timeout_s": 60}}}),
    ("/ws/duplex/adx_long", {"type": "prepare"}),
])
async def test_maximum_session_length_is_enforced(short_worker, path, prepare):
    from .conftest import b64, recv_until, wait_idle

    ws = await connect(short_worker.ws + path)
    await ws.send(json.dumps(prepare))
    await recv_until(ws, "prepared", 60)
    t0 = time.monotonic()
    n = 16000 if "duplex/" in path else 8000
    msgs: list = []
    while time.monotonic() - t0 < 10 and not any(m["type"] == "timeout" for m in msgs):
        await ws.send(json.dumps({"type": "audio_chunk", "audio_base64": b64(np.zeros(n, np.float32))}))
        try:
            msgs.append(await recv(ws, 0.5))
        except TimeoutError:
            pass
        except ConnectionClosed:
            break
    timeouts = [m for m in msgs if m["type"] == "timeout"]
    assert timeouts and timeouts[0]["reason"] == "max_session", msgs[-3:]
    assert 2.5 <= timeouts[0]["elapsed_s"] < 6
    assert (await wait_idle(short_worker, 15))["worker_status"] == "idle"


async def test_silent_client_does_not_hold_the_worker(short_worker):
    from .conftest import wait_idle

    for path, expect in [("/ws/chat", "error"), ("/ws/half_duplex/hd_silent", "timeout"), ("/ws/duplex/adx_silent", "timeout")]:
        ws = await connect(short_worker.ws + path)
        t0 = time.monotonic()
        m = await recv(ws, 10)
        assert m["type"] == expect and time.monotonic() - t0 < 4, (path, m)
        if expect == "timeout":
            assert m["reason"] == "no_prepare"
        with pytest.raises(ConnectionClosed):
            await recv(ws, 5)
        assert (await wait_idle(short_worker, 10))["worker_status"] == "idle"
