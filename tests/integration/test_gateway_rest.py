"""Gateway REST API against a real gateway process: admin auth, ETA config validation, voices,
presets, sessions (proxied to the worker that holds them, no path traversal), pages."""
from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import zipfile

import httpx
import numpy as np
import pytest
import soundfile as sf

from tests.support.gateway_procs import Proc, start_gateway
from tests.support.recordings_worker import start_recordings_worker

WORKER_TOKEN = "wt-rest-" + "x" * 24


@pytest.fixture(scope="module")
def rw(tmp_path_factory):
    """A worker serving recordings only (no engine): the sessions routes are proxied to it."""
    tmp = tmp_path_factory.mktemp("gwrest_worker")
    w = start_recordings_worker(tmp, tmp / "data", {"OMNISERVE_WORKER__TOKEN": WORKER_TOKEN})
    w.data_dir = tmp / "data"   # type: ignore[attr-defined]
    yield w
    w.stop()


@pytest.fixture(scope="module")
def g(tmp_path_factory, rw):
    gp = start_gateway(tmp_path_factory.mktemp("gwrest"), [rw.url], 0, {"OMNISERVE_GATEWAY__WORKER_TOKEN": WORKER_TOKEN})
    yield gp
    gp.stop()


@pytest.fixture(scope="module")
def c(g):
    with httpx.Client(base_url=g.url, trust_env=False, timeout=10) as client:
        yield client


def wav(seconds: float, rate: int = 22050) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate, format="WAV")
    return buf.getvalue()


def test_admin_token_file_is_private(g):
    assert oct((g.data_dir / "admin_token").stat().st_mode & 0o777) == "0o600"
    assert len(g.token) >= 24


@pytest.mark.parametrize("method,path,body", [
    ("PUT", "/api/config/eta", {"eta_chat_s": 5}),
    ("GET", "/api/admin/apps", None),
    ("PUT", "/api/admin/apps/omni", {"enabled": False}),
    ("POST", "/api/workers/register", {"url": "http://127.0.0.1:1"}),
    ("DELETE", "/api/assets/ref_audio/ra_0000000000000000", None),
])
def test_admin_endpoints_need_the_token(c, method, path, body):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}):
        r = c.request(method, path, json=body, headers=headers)
        assert r.status_code == 401, (path, headers, r.text)


def test_eta_config_validated_and_partial(c, g):
    before = c.get("/api/config/eta").json()
    assert before["eta_chat_s"] == 15 and before["eta_ema_alpha"] == 0.3 and before["eta_ema_min_samples"] == 3
    for bad in ({"eta_chat_s": -1}, {"eta_ema_alpha": 0}, {"eta_ema_alpha": 1.5}, {"eta_ema_min_samples": 0},
                {"nope": 1}, {"eta_chat_s": "x"}):
        assert c.put("/api/config/eta", json=bad, headers=g.admin).status_code == 422, bad
    r = c.put("/api/config/eta", json={"eta_half_duplex_s": 60}, headers=g.admin)
    assert r.status_code == 200
    after = r.json()
    assert after["eta_half_duplex_s"] == 60
    skip = {"eta_half_duplex_s", "effective_s"}
    assert {k: v for k, v in after.items() if k not in skip} == {k: v for k, v in before.items() if k not in skip}
    assert after["effective_s"]["half_duplex_audio"] == 60
    assert json.loads((g.data_dir / "eta_config.json").read_text())["eta_half_duplex_s"] == 60


def test_status_and_queue_shapes(c):
    st = c.get("/status").json()
    assert set(st) == {"total_workers", "idle_workers", "busy_workers", "queue_length", "max_queue_size", "running_tasks",
                       "total_slots", "free_slots"}
    q = c.get("/api/queue").json()
    assert q == {"queue_length": 0, "items": [], "running_tasks": []}
    assert c.get("/api/queue/tk_nope").status_code == 404
    assert c.get("/health").json()["status"] == "ok"


def test_ref_audio_crud(c, g):
    r = c.post("/api/assets/ref_audio?name=My voice (1)", content=wav(2.0), headers={"Content-Type": "audio/wav"})
    assert r.status_code == 201, r.text
    item = r.json()
    assert item["id"].startswith("ra_") and abs(item["duration_s"] - 2.0) < 0.05
    ids = [x["id"] for x in c.get("/api/assets/ref_audio").json()]
    assert ids[0] == "default" and item["id"] in ids
    audio = c.get(f"/api/assets/ref_audio/{item['id']}/audio")
    pcm, sr = sf.read(io.BytesIO(audio.content))
    assert audio.headers["content-type"] == "audio/wav" and sr == 16000 and abs(len(pcm) / sr - 2.0) < 0.05
    # JSON form, FLAC inside
    buf = io.BytesIO()
    sf.write(buf, np.zeros(16000, np.float32) + 0.1, 16000, format="FLAC")
    r = c.post("/api/assets/ref_audio", json={"name": "flac", "data": base64.b64encode(buf.getvalue()).decode()})
    assert r.status_code == 201, r.text
    # rejected: bad names, not audio, too long, too big
    assert c.post("/api/assets/ref_audio?name=<script>", content=wav(1)).status_code == 400
    assert c.post("/api/assets/ref_audio?name=a%26b", content=wav(1)).status_code == 400
    r = c.post("/api/assets/ref_audio", json={"name": "Zoë's voice, take 2", "data": base64.b64encode(wav(1)).decode()})
    assert r.status_code == 201 and r.json()["name"] == "Zoë's voice, take 2"  # a file name from a browser
    assert c.post("/api/assets/ref_audio?name=x", content=b"not audio at all" * 10).status_code == 400
    assert c.post("/api/assets/ref_audio?name=long", content=wav(31, 8000)).status_code == 400
    assert c.post("/api/assets/ref_audio?name=big", content=b"\0" * (11 * 1024 * 1024)).status_code == 413
    # delete is admin-only
    assert c.delete(f"/api/assets/ref_audio/{item['id']}").status_code == 401
    assert c.delete(f"/api/assets/ref_audio/{item['id']}", headers=g.admin).status_code == 200
    assert c.get(f"/api/assets/ref_audio/{item['id']}/audio").status_code == 404
    assert c.get("/api/assets/ref_audio/..%2Findex.json/audio").status_code == 404


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_ref_audio_webm_from_a_browser(c, tmp_path):
    src = tmp_path / "a.wav"
    src.write_bytes(wav(1.5, 48000))
    webm = tmp_path / "a.webm"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(src), "-c:a", "libopus", str(webm)], check=True)
    r = c.post("/api/assets/ref_audio?name=webm", content=webm.read_bytes(), headers={"Content-Type": "audio/webm"})
    assert r.status_code == 201, r.text
    assert abs(r.json()["duration_s"] - 1.5) < 0.1


def test_default_voice_presets_frontend_defaults(c):
    d = c.get("/api/default_ref_audio").json()
    pcm = np.frombuffer(base64.b64decode(d["audio_base64"]), "<f4")
    assert d["sample_rate"] == 16000 and 1.0 < pcm.size / 16000 < 6 and np.abs(pcm).max() > 0.05
    p = c.get("/api/presets").json()
    assert set(p) == {"turnbased", "half_duplex", "omni", "audio_duplex"}
    first = p["half_duplex"][0]
    assert first["system_prompt"] and first["has_audio"]
    a = c.get(first["audio_url"])
    assert a.status_code == 200 and a.content[:4] == b"RIFF"
    assert c.get("/api/presets/half_duplex/nope/audio").status_code == 404
    assert c.get("/api/presets/..%2F..%2Fgateway/x/audio").status_code == 404
    fd = c.get("/api/frontend_defaults").json()
    assert fd["omni"]["config"]["chunk_ms"] == 1000 and fd["half_duplex"]["config"]["vad"]["threshold"] == 0.8


def _make_session(w: Proc, sid="rec_abc123"):
    d = w.data_dir / "sessions" / sid   # type: ignore[attr-defined]
    (d / "frames").mkdir(parents=True, exist_ok=True)
    (d / "meta.json").write_text(json.dumps({"mode": "omni", "created_at": 1}))
    (d / "recording.json").write_text(json.dumps({"events": [{"t": 0, "type": "prepared"}]}))
    (d / "frames" / "0001.jpg").write_bytes(b"\xff\xd8jpeg")
    (d / "user.wav").write_bytes(wav(0.2))
    return sid


def test_sessions_read_download_comment_upload(c, g, rw):
    sid = _make_session(rw)
    m = c.get(f"/api/sessions/{sid}").json()
    assert m["mode"] == "omni" and "frames/0001.jpg" in m["files"]
    assert c.get(f"/api/sessions/{sid}/recording").json()["events"][0]["type"] == "prepared"
    assert c.get(f"/api/sessions/{sid}/assets/frames/0001.jpg").content == b"\xff\xd8jpeg"
    z = c.get(f"/api/sessions/{sid}/download")
    assert z.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(z.content)).namelist()
    assert set(names) >= {"meta.json", "recording.json", "frames/0001.jpg", "user.wav"}
    # comments (capped) and the browser recording upload (type-checked)
    r = c.post(f"/api/sessions/{sid}/comment", json={"text": "great", "rating": 5})
    assert r.status_code == 201
    assert c.get(f"/api/sessions/{sid}/comment").json()[0]["text"] == "great"
    assert c.post(f"/api/sessions/{sid}/comment", json={"text": "x" * 5000}).status_code == 422
    assert c.post(f"/api/sessions/{sid}/upload-recording", content=b"\x1aE\xdf\xa3" + b"\0" * 100,
                  headers={"Content-Type": "video/webm"}).json()["stored"] == "client_recording.webm"
    assert c.post(f"/api/sessions/{sid}/upload-recording", content=b"#!/bin/sh\nrm -rf /",
                  headers={"Content-Type": "video/webm"}).status_code == 415
    assert c.get("/api/sessions/rec_missing").status_code == 404
    assert (rw.data_dir / "sessions" / sid / "client_recording.webm").is_file()
    assert not (g.data_dir / "sessions").exists()      # nothing of it on the gateway's disk


def test_no_path_traversal(c, g, rw):
    sid = _make_session(rw, "rec_trav")
    secret = rw.data_dir / "secret"
    secret.write_text(g.token)      # a file beside the worker's recordings that must never be served
    os.symlink(secret, rw.data_dir / "sessions" / sid / "link")
    os.symlink(rw.data_dir, rw.data_dir / "sessions" / "rec_dirlink")
    for path in [f"/api/sessions/{sid}/assets/../../secret", f"/api/sessions/{sid}/assets/..%2F..%2Fsecret",
                 f"/api/sessions/{sid}/assets/%2e%2e/%2e%2e/secret", f"/api/sessions/{sid}/assets/link",
                 f"/api/sessions/{sid}/assets//etc/passwd", f"/api/sessions/{sid}/assets/%2Fetc%2Fpasswd",
                 f"/api/sessions/{sid}/assets/..%2F..%2F..%2Frecordings%2Fnone",        # another worker route
                 f"/api/sessions/{sid}/assets/%2e%2e%2f%2e%2e%2fhealth", f"/api/sessions/{sid}/assets/frames%2F..%2F..",
                 "/api/sessions/..%2F/assets/secret", "/api/sessions/rec_dirlink/assets/secret",
                 "/api/sessions/..", "/api/sessions/%2e%2e/download", "/api/sessions/rec_trav%0A",
                 "/static/../gateway/app.py", "/static/%2e%2e/%2e%2e/config.py"]:
        r = c.get(path)
        assert r.status_code == 404 and g.token not in r.text, (path, r.status_code)
    names = zipfile.ZipFile(io.BytesIO(c.get(f"/api/sessions/{sid}/download").content)).namelist()
    assert "link" not in names


def test_pages(c):
    for path in ("/", "/turnbased", "/half_duplex", "/omni", "/audio_duplex", "/admin", "/s/rec_abc"):
        r = c.get(path)
        assert r.status_code in (200, 404), path   # 404 only while the page file is not written yet
        if r.status_code == 200:
            assert r.headers["content-type"].startswith("text/html")


def test_https_by_default_with_a_self_signed_certificate(tmp_path):
    import ssl
    import subprocess
    import sys
    import time

    import websockets.sync.client as wsc

    from tests.support.gateway_procs import REPO, free_port

    port = free_port()
    data = tmp_path / "data"
    p = subprocess.Popen([sys.executable, "-m", "omniserve.cli", "gateway", "--host", "127.0.0.1", "--port", str(port),
                          "--data-dir", str(data), "--log-level", "warning"], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = p.stdout.readline()
        assert f"https://127.0.0.1:{port}" in first
        assert "admin token" in p.stdout.readline()   # printed on first run
        ctx = ssl.create_default_context(cafile=str(data / "tls" / "cert.pem"))
        deadline = time.monotonic() + 20
        while True:
            try:
                r = httpx.get(f"https://127.0.0.1:{port}/health", verify=ctx, trust_env=False)
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert r.json()["status"] == "ok"
        assert oct((data / "tls" / "key.pem").stat().st_mode & 0o777) == "0o600"
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/health", trust_env=False, timeout=3)
        with wsc.connect(f"wss://127.0.0.1:{port}/ws/duplex/omni_tls", ssl=ctx) as ws:
            assert json.loads(ws.recv(5))["type"] == "queued"   # no worker: it waits in the queue
    finally:
        p.terminate()
        p.wait(10)
