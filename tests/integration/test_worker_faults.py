"""Hostile and broken clients cannot pin a worker: deep JSON is answered with ``error`` on every
endpoint, a dead reader task ends its session at once, a client that stops reading is dropped
after ``send_timeout_s``, and with a worker token nothing answers without it."""
from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import httpx
import pytest
from starlette.websockets import WebSocketState
from websockets.exceptions import InvalidStatus

from omniserve.config import Settings
from omniserve.tokens import bearer
from omniserve.worker.half_duplex import HalfDuplexConnection
from omniserve.worker.session import WorkerContext
from omniserve.worker.state import Status, WorkerRuntime

from .conftest import REPO, TEST_ENV, connect, recv, recv_until, start_worker, stop_worker, wait_idle

DEEP = {"open brackets": "[" * 50000, "objects 200 deep": '{"a":' * 200 + "1" + "}" * 200}
TOKEN = "faults-test-token-0123456789"
SEND_TIMEOUT_S = 3.0


# ------------------------------------------------------------------ deep JSON, shared worker
@pytest.mark.parametrize("text", list(DEEP.values()), ids=list(DEEP))
async def test_deep_json_on_chat_is_an_error(idle, text):
    ws = await connect(idle.ws + "/ws/chat")
    await ws.send(text)
    m = await recv(ws, 20)
    assert m["type"] == "error" and "nested too deeply" in m["error"], m
    hl = await wait_idle(idle, 5)
    assert hl["worker_status"] == "idle", hl


@pytest.mark.parametrize("path", ["/ws/half_duplex/hd_deep", "/ws/duplex/adx_deep", "/ws/duplex/omni_deep"])
async def test_deep_json_on_streaming_endpoints_is_an_error_and_the_session_goes_on(idle, path):
    ws = await connect(idle.ws + path)
    for text in DEEP.values():
        await ws.send(text)
        m = await recv(ws, 20)
        assert m["type"] == "error" and "nested too deeply" in m["error"], m
    await ws.send(b"\xff\xfe not text")  # a binary frame that is not UTF-8 JSON
    m = await recv(ws, 20)
    assert m["type"] == "error" and m["error"].startswith("Invalid JSON"), m
    await ws.send(json.dumps({"type": "stop"}))
    assert (await recv_until(ws, {"stopped"}, 20))[-1]["type"] == "stopped"
    hl = await wait_idle(idle, 5)
    assert hl["worker_status"] == "idle", hl


# ------------------------------------------------------------ reader failures (no process)
class ScriptedSocket:
    """Stands in for starlette's WebSocket: hands out ``frames``, then fails to receive with a
    non-disconnect error (what a bug in the read path looks like); records what is sent."""

    def __init__(self, frames: list[str]) -> None:
        self.frames = list(frames)
        self.sent: list[dict] = []
        self.scope: dict = {}
        self.application_state = self.client_state = WebSocketState.CONNECTED
        self.closed: Optional[int] = None

    async def accept(self) -> None:
        pass

    async def receive(self) -> dict:
        await asyncio.sleep(0.05)
        if self.frames:
            return {"type": "websocket.receive", "text": self.frames.pop(0)}
        raise ValueError("reader bug")

    async def send_text(self, text: str) -> None:
        self.sent.append(json.loads(text))

    async def close(self, code: int = 1000) -> None:
        self.closed = code
        self.application_state = WebSocketState.DISCONNECTED


class TakeFails(HalfDuplexConnection):
    def take(self, msg: Any) -> None:
        if getattr(msg, "type", None) == "audio_chunk":
            raise KeyError("bug in take")
        super().take(msg)


def _session(cls: type, frames: list[str]) -> tuple[Any, ScriptedSocket, WorkerRuntime]:
    settings = Settings()
    settings.worker.record_sessions = False
    state = WorkerRuntime(0, "embedded")
    state.status = Status.IDLE
    ws = ScriptedSocket(frames)
    return cls(ws, WorkerContext(settings, state), "hd_reader"), ws, state


async def test_a_dead_reader_ends_the_session_at_once():
    session, ws, state = _session(HalfDuplexConnection, [])
    t0 = time.monotonic()
    await asyncio.wait_for(session.serve(), 10)  # prepare_wait_s is 30 s: it must not be waited for
    assert time.monotonic() - t0 < 5
    assert state.status == Status.IDLE and state.health()["current_session_id"] is None
    assert ws.sent[-1]["type"] == "error" and "Internal error" in ws.sent[-1]["error"], ws.sent
    assert "reader bug" not in ws.sent[-1]["error"] and ws.closed is not None
    state.shutdown()


async def test_a_failing_take_is_answered_and_the_session_goes_on():
    frames = [json.dumps({"type": "audio_chunk", "audio_base64": "AAAAAA=="}), json.dumps({"type": "stop"})]
    session, ws, state = _session(TakeFails, frames)
    await asyncio.wait_for(session.serve(), 10)
    types = [m["type"] for m in ws.sent]
    assert types == ["error", "stopped"], ws.sent
    assert "KeyError" in ws.sent[0]["error"] and "bug in take" not in ws.sent[0]["error"]
    assert state.status == Status.IDLE
    state.shutdown()


# ------------------------------------------------- a worker with a token and a short deadline
@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory):
    """A second real worker: worker token set, sends time out after SEND_TIMEOUT_S."""
    env = dict(TEST_ENV, OMNISERVE_WORKER__TOKEN=TOKEN, OMNISERVE_WORKER__SEND_TIMEOUT_S=str(SEND_TIMEOUT_S))
    h = start_worker(tmp_path_factory.mktemp("guarded"), env)
    yield h
    stop_worker(h)


async def _health(base: str, headers: dict, timeout: float = 5) -> httpx.Response:
    async with httpx.AsyncClient() as c:
        return await c.get(base + "/health", headers=headers, timeout=timeout)


async def _wait_status(base: str, want: set[str], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            hl = (await _health(base, bearer(TOKEN))).json()
            if hl["worker_status"] in want or time.monotonic() > deadline:
                return hl
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.1)


async def test_token_is_required_on_every_endpoint(guarded):
    hl = await _wait_status(guarded.base, {"loading", "idle"}, 60)  # answers while loading too
    assert hl["worker_status"] in {"loading", "idle"}, hl
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        r = await _health(guarded.base, headers)
        assert r.status_code == 401 and TOKEN not in r.text, (headers, r.status_code)
    for path in ("/ws/chat", "/ws/half_duplex/hd_tok", "/ws/duplex/adx_tok"):
        with pytest.raises(InvalidStatus) as e:
            await connect(guarded.ws + path)
        assert e.value.response.status_code == 403, path
    import websockets

    ws = await websockets.connect(guarded.ws + "/ws/chat", additional_headers=bearer(TOKEN), open_timeout=15)
    await ws.close()


class RawClient:
    """A WebSocket client on a plain socket with a tiny receive buffer, so it can stop reading."""

    def __init__(self, port: int, path: str, headers: dict[str, str]) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(60)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self._exact(1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def _exact(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            part = self.sock.recv(n - len(out))
            if not part:
                raise EOFError
            out += part
        return out

    def send_text(self, text: str) -> None:
        data, mask = text.encode(), os.urandom(4)
        n = len(data)
        size = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n) if n < 65536 \
            else bytes([0x80 | 127]) + struct.pack("!Q", n)
        self.sock.sendall(b"\x81" + size + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def next_frame_size(self) -> int:
        """Payload length of the next frame, read without taking it off the socket."""
        while True:
            head = self.sock.recv(10, socket.MSG_PEEK)
            n = head[1] & 0x7F if len(head) >= 2 else -1
            need = 2 if 0 <= n < 126 else 4 if n == 126 else 10
            if len(head) >= need:
                return n if n < 126 else struct.unpack("!H", head[2:4])[0] if n == 126 else struct.unpack("!Q", head[2:10])[0]
            time.sleep(0.01)

    def recv_json(self) -> dict:
        head = self._exact(2)
        n = head[1] & 0x7F
        n = struct.unpack("!H", self._exact(2))[0] if n == 126 else struct.unpack("!Q", self._exact(8))[0] if n == 127 else n
        return json.loads(self._exact(n))

    def dropped_within(self, seconds: float) -> bool:
        """Whether the server closed the connection: reading what is buffered ends in EOF/reset."""
        self.sock.settimeout(seconds)
        try:
            while self.sock.recv(65536):
                pass
        except (ConnectionResetError, EOFError):
            pass
        except socket.timeout:
            return False
        return True


LONG_CHAT = {"messages": [{"role": "user", "content": "Tell me a long story about a dragon who learns to bake bread."}],
             "streaming": True, "generation": {"max_new_tokens": 600}, "tts": {"enabled": True}}


async def test_a_client_that_stops_reading_is_dropped_and_the_worker_serves_the_next(guarded):
    hl = await _wait_status(guarded.base, {"idle", "error"}, 600)
    assert hl["worker_status"] == "idle", hl
    port = int(guarded.base.rsplit(":", 1)[1])
    client = await asyncio.to_thread(RawClient, port, "/ws/chat", bearer(TOKEN))
    client.send_text(json.dumps(LONG_CHAT))
    # take the small frames (prefill_done, text deltas); stop reading at the first big one (speech),
    # which then fills the socket buffers: from here on the worker's sends find no room
    while await asyncio.to_thread(client.next_frame_size) < 64 * 1024:
        m = await asyncio.to_thread(client.recv_json)
        assert m["type"] in {"prefill_done", "chunk"}, m
    stalled = time.monotonic()
    hl = await _wait_status(guarded.base, {"idle"}, SEND_TIMEOUT_S + 5)
    assert hl["worker_status"] == "idle", f"still {hl} {time.monotonic() - stalled:.1f} s after the client stalled"
    assert await asyncio.to_thread(client.dropped_within, 5), "the worker did not drop the stalled connection"
    metas = [json.loads(p.read_text()) for p in Path(guarded.data_dir, "sessions").glob("*/meta.json")]
    assert any(m["type"] == "chat" and m["end_reason"] == "disconnect" for m in metas), metas

    import websockets  # the next client is served as usual

    ws = await websockets.connect(guarded.ws + "/ws/chat", additional_headers=bearer(TOKEN), open_timeout=15)
    await ws.send(json.dumps({"messages": [{"role": "user", "content": "Say hi."}], "generation": {"max_new_tokens": 8}}))
    msgs = await recv_until(ws, {"done", "error"}, 120)
    assert msgs[-1]["type"] == "done", msgs[-1]
    await ws.close()


def test_a_worker_beyond_loopback_without_a_token_refuses_to_start(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNISERVE_WORKER__")}
    r = subprocess.run([sys.executable, "-m", "omniserve.cli", "worker", "--host", "0.0.0.0", "--port", "0",
                        "--no-record", "--data-dir", str(tmp_path)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "worker token" in r.stderr and "OMNISERVE_WORKER__TOKEN" in r.stderr
