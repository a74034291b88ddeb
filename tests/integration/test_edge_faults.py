"""The gateway's public edge against hostile clients, on a real gateway process (no workers):
slowloris, foreign Host names and DNS rebinding, oversize bodies, cross-site and rate-limited voice
uploads, security headers, private file modes, streamed recording uploads (through the gateway to
the worker that holds the recording) and the storage cap."""
from __future__ import annotations

import io
import socket
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import soundfile as sf

from tests.support.gateway_procs import GatewayProc, Proc, start_gateway
from tests.support.recordings_worker import start_recordings_worker

HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0
UPLOADS_PER_HOUR = 3
MAX_VOICES = 6
STORAGE_CAP_MB = 150
MB = 1024 * 1024


@pytest.fixture(scope="module")
def g(tmp_path_factory):
    env = {"OMNISERVE_GATEWAY__EDGE__HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
           "OMNISERVE_GATEWAY__EDGE__BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
           "OMNISERVE_GATEWAY__EDGE__UPLOADS_PER_IP_PER_HOUR": str(UPLOADS_PER_HOUR),
           "OMNISERVE_GATEWAY__EDGE__MAX_VOICES": str(MAX_VOICES),
           "OMNISERVE_GATEWAY__EDGE__TRUSTED_PROXIES": '["127.0.0.1"]'}   # lets the tests speak for many addresses
    gp = start_gateway(tmp_path_factory.mktemp("edge"), [], 0, env, "--public-name", "gw.example")
    yield gp
    gp.stop()


@pytest.fixture(scope="module")
def c(g):
    with httpx.Client(base_url=g.url, trust_env=False, timeout=30) as client:
        yield client


def rss(g: Proc) -> int:
    return psutil.Process(g.proc.pid).memory_info().rss


def wav(seconds: float = 1.0, rate: int = 16000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate, format="WAV")
    return buf.getvalue()


def raw(g: GatewayProc) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", g.port), timeout=10)
    return s


def read_status(s: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        got = s.recv(4096)
        if not got:
            break
        data += got
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0


def closed_after(s: socket.socket, limit_s: float) -> float:
    """Seconds until the server closes ``s`` (reads and drops anything it sends)."""
    t0 = time.monotonic()
    s.settimeout(limit_s)
    try:
        while s.recv(4096):
            pass
    except ConnectionResetError:
        pass
    except socket.timeout:
        return float("inf")
    return time.monotonic() - t0


def ws_handshake(g: GatewayProc, host: str, origin: str | None = None, path: str = "/ws/duplex/omni_edge") -> int:
    with raw(g) as s:
        req = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")
        if origin:
            req += f"Origin: {origin}\r\n"
        s.sendall((req + "\r\n").encode())
        return read_status(s)


# ------------------------------------------------------------------ slowloris
def test_half_sent_requests_are_closed_while_others_are_served(g, c):
    half_line = raw(g)
    half_line.sendall(b"GET /api/apps HT")
    silent = raw(g)
    slow_body = raw(g)
    slow_body.sendall(b"POST /api/sessions/x/comment HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{\"te")
    assert c.get("/health").status_code == 200           # served meanwhile
    for s, limit in ((half_line, HEADER_TIMEOUT_S), (silent, HEADER_TIMEOUT_S), (slow_body, BODY_TIMEOUT_S)):
        with s:
            assert closed_after(s, limit + 1.0) <= limit + 1.0
    # headers trickled one piece at a time are cut off at the same deadline
    with raw(g) as s:
        t0 = time.monotonic()
        try:
            for _ in range(40):
                s.sendall(b"X-Slow: a\r\n" if _ else b"GET / HTTP/1.1\r\nHost: localhost\r\n")
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert closed_after(s, 2.0) + (time.monotonic() - t0) <= HEADER_TIMEOUT_S + 1.5
    assert c.get("/health").status_code == 200


def test_huge_headers_refused(g):
    with raw(g) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * (100 * 1024) + b"\r\n\r\n")
        assert read_status(s) == 431


def test_connection_limit_covers_websocket_handshakes(tmp_path):
    gp = start_gateway(tmp_path, [], 0, {"OMNISERVE_GATEWAY__EDGE__MAX_CONNECTIONS": "3"})
    try:
        idle = [raw(gp) for _ in range(3)]
        time.sleep(0.3)
        with raw(gp) as s:
            s.sendall(b"GET /api/apps HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert read_status(s) == 503
        assert ws_handshake(gp, "localhost") == 503
        for s in idle:
            s.close()
        time.sleep(0.3)
        assert ws_handshake(gp, "localhost") == 101
    finally:
        gp.stop()


# --------------------------------------------------------- Host allow-list / Origin
def test_foreign_host_refused_on_pages_rest_and_websockets(g, c):
    for path in ("/", "/api/apps", "/health"):
        assert c.get(path, headers={"Host": "evil.example"}).status_code == 421, path
        assert c.get(path, headers={"Host": f"evil.example:{g.port}"}).status_code == 421, path
        assert c.get(path, headers={"Host": f"localhost:{g.port}"}).status_code == 200, path
        assert c.get(path, headers={"Host": f"gw.example:{g.port}"}).status_code == 200, path   # --public-name
    assert ws_handshake(g, "evil.example") == 403
    assert ws_handshake(g, f"127.0.0.1:{g.port}") == 101


def test_public_name_page_opens_websockets(g):
    """A page served under a --public-name opens WebSockets (its Origin is on the list)."""
    assert ws_handshake(g, f"gw.example:{g.port}", origin=f"https://gw.example:{g.port}") == 101


def test_dns_rebinding_refused(g, c):
    rebound = {"Host": f"evil.example:{g.port}", "Origin": f"http://evil.example:{g.port}"}
    assert c.get("/", headers=rebound).status_code == 421
    assert c.post("/api/assets/ref_audio?name=x", content=wav(), headers=rebound).status_code == 421
    assert ws_handshake(g, rebound["Host"], rebound["Origin"]) == 403
    # a foreign page on a good Host: the Origin alone decides, never its equality with Host
    assert ws_handshake(g, f"localhost:{g.port}", "http://evil.example") == 403
    assert ws_handshake(g, f"localhost:{g.port}", "null") == 403
    assert ws_handshake(g, f"localhost:{g.port}", f"http://localhost:{g.port}") == 101


# ------------------------------------------------------------------ body caps
def _push(s: socket.socket, head: bytes, piece: bytes, total: int) -> int:
    """Send ``head`` then ``piece`` until ``total`` bytes or the server stops us; bytes sent."""
    s.sendall(head)
    sent = 0
    try:
        while sent < total:
            s.sendall(piece)
            sent += len(piece)
    except (BrokenPipeError, ConnectionResetError):
        pass
    return sent


def test_oversize_bodies_refused_fast_without_buffering(g):
    before = rss(g)
    t0 = time.monotonic()
    with raw(g) as s:   # an admin route, no token, 50 MB announced
        head = (b"PUT /api/admin/apps/omni HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % (50 * MB))
        s.sendall(head)
        assert read_status(s) == 413
    with raw(g) as s:   # chunked, no length, keeps going
        piece = b"%x\r\n%s\r\n" % (64 * 1024, b"a" * 64 * 1024)
        sent = _push(s, b"POST /api/workers/register HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n",
                     piece, 50 * MB)
        assert sent < 50 * MB                              # the server hung up long before
        assert read_status(s) in (401, 413, 0)             # no token (checked first); 0: the reset came first
    with raw(g) as s:   # an ordinary route: the default cap
        piece = b"%x\r\n%s\r\n" % (64 * 1024, b"a" * 64 * 1024)
        _push(s, b"POST /api/sessions/x/comment HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n",
              piece, 8 * MB)
        assert read_status(s) in (413, 0)
    assert time.monotonic() - t0 < 5
    assert rss(g) - before < 100 * MB


def test_chunked_body_counted_against_the_cap(g):
    """A route that reads its body never sees more than the cap (admin: 64 KB), whatever it is told."""
    with raw(g) as s:   # just over the cap, then the client waits for the answer
        s.sendall(b"PUT /api/config/eta HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
                  b"Authorization: Bearer %s\r\n\r\n" % g.token.encode()
                  + b"%x\r\n%s\r\n" % (70 * 1024, b" " * 70 * 1024))
        assert read_status(s) == 413


# ----------------------------------------------------------- security headers
def test_security_headers_on_pages_rest_and_errors(g, c):
    for r in (c.get("/"), c.get("/api/apps"), c.get("/api/nope"), c.get("/api/admin/apps"),
              c.get("/", headers={"Host": "evil.example"}),
              c.post("/api/sessions/x/comment", content=b"x" * (2 * MB))):
        assert r.headers["x-content-type-options"] == "nosniff", r.url
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "no-referrer"
        csp = r.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "object-src 'none'" in csp
        assert "microphone=(self)" in r.headers["permissions-policy"]
    assert f"wss://127.0.0.1:{g.port}" in c.get("/").headers["content-security-policy"]
    assert "evil" not in c.get("/", headers={"Host": "evil.example"}).headers["content-security-policy"]


# ---------------------------------------------------------------- voice uploads
def test_voice_uploads_same_site_only_rate_limited_and_capped(g, c):
    def up(ip: str, **headers: str) -> httpx.Response:
        return c.post("/api/assets/ref_audio?name=v", content=wav(),
                      headers={"Content-Type": "audio/wav", "X-Forwarded-For": ip, **headers})

    assert up("198.51.100.1", Origin="http://evil.example").status_code == 403
    assert up("198.51.100.1", **{"Sec-Fetch-Site": "cross-site"}).status_code == 403
    a = "203.0.113.7"
    assert up(a, Origin=f"http://localhost:{g.port}", **{"Sec-Fetch-Site": "same-origin"}).status_code == 201
    assert [up(a).status_code for _ in range(UPLOADS_PER_HOUR)] == [201] * (UPLOADS_PER_HOUR - 1) + [429]
    r = up(a)
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    assert up("203.0.113.8").status_code == 201                 # another address has its own allowance
    assert up(a, Authorization=f"Bearer {g.token}").status_code == 201   # admins are exempt
    assert up(f"10.9.9.9, 127.0.0.1").status_code == 201        # right-most untrusted hop counts
    voices = len(c.get("/api/assets/ref_audio").json()) - 1
    assert voices == MAX_VOICES
    assert up("203.0.113.9").status_code == 507                 # the store is full
    assert up(a, Authorization=f"Bearer {g.token}").status_code == 507


# -------------------------------------------------------------- file modes
def test_new_data_files_are_private(g, c):
    assert c.put("/api/config/eta", json={"eta_chat_s": 14}, headers=g.admin).status_code == 200
    for v in c.get("/api/assets/ref_audio").json()[1:2]:      # room for one more voice (the store may be full)
        assert c.delete(f"/api/assets/ref_audio/{v['id']}", headers=g.admin).status_code == 200
    r = c.post("/api/assets/ref_audio?name=private", content=wav(), headers={"Content-Type": "audio/wav", **g.admin})
    assert r.status_code == 201, r.text
    voice = g.data_dir / "ref_audio" / r.json()["id"]
    paths = [g.data_dir / "eta_config.json", voice.with_suffix(".wav"), voice.with_suffix(".json"),
             *(g.data_dir / "ref_audio").glob("ra_*")]
    for p in paths:
        assert p.stat().st_mode & 0o777 == 0o600, p
    for d in (g.data_dir, g.data_dir / "ref_audio"):
        assert d.stat().st_mode & 0o777 == 0o700, d


# ------------------------------------------------------- streamed recording upload
@pytest.fixture
def gw_rec(tmp_path):
    """A gateway whose one worker serves recordings (its own data folder, a 150 MB storage cap)."""
    token = {"OMNISERVE_WORKER__TOKEN": "wt-edge-" + "y" * 24}
    w = start_recordings_worker(tmp_path, tmp_path / "worker_data",
                                {**token, "OMNISERVE_WORKER__SESSION_STORAGE_CAP_MB": str(STORAGE_CAP_MB)})
    try:
        gp = start_gateway(tmp_path, [w.url], 0, {"OMNISERVE_GATEWAY__WORKER_TOKEN": token["OMNISERVE_WORKER__TOKEN"]})
        try:
            yield gp, w, tmp_path / "worker_data" / "sessions"
        finally:
            gp.stop()
    finally:
        w.stop()


def _session(sessions: Path, sid: str) -> Path:
    (sessions / sid).mkdir(parents=True, exist_ok=True)
    return sessions / sid


def _body(total: int, first: bytes = b"\x1aE\xdf\xa3"):
    yield first + b"\0" * (MB - len(first))
    for _ in range(total // MB - 1):
        yield b"\0" * MB


def test_upload_recording_is_streamed_and_the_storage_cap_holds(gw_rec):
    """Through the gateway to the worker that holds the recording: streamed on both hops, the
    worker's storage cap holds, and the gateway's own disk gets nothing."""
    g, w, sessions = gw_rec
    big = _session(sessions, "rec_big")
    before, before_w = rss(g), rss(w)
    with httpx.Client(base_url=g.url, trust_env=False, timeout=60) as c:
        r = c.post("/api/sessions/rec_big/upload-recording", content=_body(100 * MB),
                   headers={"Content-Type": "video/webm"})
        assert r.status_code == 200, r.text
        assert r.json() == {"stored": "client_recording.webm", "bytes": 100 * MB}
        grew, grew_w = rss(g) - before, rss(w) - before_w
        assert grew < 30 * MB and grew_w < 30 * MB, (grew, grew_w)     # streamed, never held whole
        stored = big / "client_recording.webm"
        assert stored.stat().st_size == 100 * MB and stored.stat().st_mode & 0o777 == 0o600
        # 100 MB more would pass the 150 MB cap: refused, and nothing half-written stays behind
        big2 = _session(sessions, "rec_big2")
        r = c.post("/api/sessions/rec_big2/upload-recording", content=_body(100 * MB),
                   headers={"Content-Type": "audio/webm"})
        assert r.status_code == 507, r.text
        assert list(big2.iterdir()) == []
        # what fits still fits; a wrong type is refused from its first bytes
        assert c.post("/api/sessions/rec_big2/upload-recording", content=_body(2 * MB),
                      headers={"Content-Type": "audio/webm"}).status_code == 200
        assert c.post("/api/sessions/rec_big2/upload-recording", content=_body(2 * MB, b"#!/bin/sh\n"),
                      headers={"Content-Type": "audio/webm"}).status_code == 415
        assert sorted(p.name for p in big2.iterdir()) == ["client_recording.webm"]
        # past the edge's cap (gateway.max_upload_recording_bytes) the gateway refuses before the worker sees it
        assert c.post("/api/sessions/rec_big2/upload-recording", content=_body(201 * MB),
                      headers={"Content-Type": "audio/webm", "Content-Length": str(201 * MB)}).status_code == 413
    assert not (g.data_dir / "sessions").exists()


# ------------------------------------------------------------ worker registration
def test_worker_registration_takes_the_worker_token(g, c):
    worker_token = (g.data_dir / "worker_token").read_text().strip()
    assert worker_token and worker_token != g.token
    body = {"url": "http://127.0.0.1:9"}
    assert c.post("/api/workers/register", json=body).status_code == 401
    assert c.post("/api/workers/register", json=body, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert c.post("/api/workers/register", json=body, headers={"Authorization": f"Bearer {worker_token}"}).status_code == 200
    assert c.post("/api/workers/register", json=body, headers=g.admin).status_code == 200
    # the worker token is not an admin token
    assert c.get("/api/admin/apps", headers={"Authorization": f"Bearer {worker_token}"}).status_code == 401
