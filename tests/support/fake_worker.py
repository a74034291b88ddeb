"""A zero-compute test worker that speaks the worker protocol (for gateway scheduling tests only).

It serves ``/health`` like a real worker (worker_status, cached_prefix_hashes, …) and the three
WebSocket endpoints with configurable delays, and records a digest of every frame it received
(``GET /debug/received``) so tests can check what the gateway forwarded, byte for byte.

    python -m tests.support.fake_worker --port 22490 [--chat-delay 0.5] [--load-delay 2]

Chat prefill costs ``--prefill-per-msg`` seconds per message that is NOT in its cache, so cache
affinity shows up as saved time; ``prefill_done`` also reports ``cached_messages``.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import secrets
import time
from typing import Optional

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from omniserve.protocol.affinity import longest_cached_prefix, prefix_hashes


class FakeWorker:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.started = time.monotonic()
        self.status = "loading" if args.load_delay > 0 else "idle"
        self.session: Optional[str] = None
        self.cached: list[str] = []
        self.received: list[dict] = []
        self.sessions_served = 0

    # ------------------------------------------------------------------ http
    def health(self) -> dict:
        if self.status == "loading" and time.monotonic() - self.started >= self.args.load_delay:
            self.status = "idle"
        return {"status": "ok", "worker_status": self.status, "model_loaded": self.status != "loading",
                "current_session_id": self.session, "kv_cache_length": 10 * len(self.cached),
                "cached_prefix_hashes": self.cached, "index": self.args.index,
                "sessions_served": self.sessions_served}

    def process_request(self, conn: ServerConnection, request: Request) -> Optional[Response]:
        token = os.environ.get("OMNISERVE_WORKER__TOKEN")
        if token and request.headers.get("Authorization") != f"Bearer {token}":
            return Response(401, "Unauthorized", Headers([("Content-Length", "0")]), b"")
        if request.path == "/health":
            body = json.dumps(self.health())
        elif request.path == "/debug/received":
            body = json.dumps(self.received)
        else:
            return None
        return Response(200, "OK", Headers([("Content-Type", "application/json"),
                                            ("Content-Length", str(len(body)))]), body.encode())

    # -------------------------------------------------------------------- ws
    async def handler(self, ws: ServerConnection) -> None:
        path = ws.request.path
        if self.status != "idle" or self.args.busy_first > 0:
            self.args.busy_first -= 1
            why = "Worker loading" if self.status == "loading" else "Worker busy"
            await ws.send(json.dumps({"type": "error", "error": why, "message": why}))
            await ws.close(1013)
            return
        self.received = []
        self.session = path.rsplit("/", 1)[-1]
        self.sessions_served += 1
        code, reason = 1000, ""
        try:
            if path == "/ws/chat":
                self.status = "busy_chat"
                await self.chat(ws)
            elif path.startswith("/ws/half_duplex/"):
                self.status = "busy_half_duplex"
                code, reason = await self.session_loop(ws, duplex=False)
            elif path.startswith("/ws/duplex/"):
                self.status = "duplex_active"
                code, reason = await self.session_loop(ws, duplex=True)
            else:
                code = 1008
        except ConnectionClosed:
            pass
        finally:
            self.session = None
            # like the real worker: idle first, then the socket closes (the gateway trusts that order)
            if self.args.stuck:
                self.status = "busy_chat"          # never idle again (a stuck engine), never closes
                await ws.wait_closed()
            else:
                if self.args.linger:
                    await asyncio.sleep(self.args.linger)
                self.status = "idle"
                await ws.close(code, reason)

    def note(self, raw: str) -> dict:
        try:
            t = json.loads(raw).get("type")
        except ValueError:
            t = None
        d = {"type": t, "len": len(raw), "sha256": hashlib.sha256(raw.encode()).hexdigest()}
        self.received.append(d)
        return d

    async def chat(self, ws: ServerConnection) -> None:
        raw = await ws.recv()
        self.note(raw)
        req = json.loads(raw)
        msgs = req.get("messages") or []
        hashes = prefix_hashes(msgs)
        k = longest_cached_prefix(hashes, self.cached)
        await asyncio.sleep(self.args.prefill_per_msg * (len(msgs) - k))
        await ws.send(json.dumps({"type": "prefill_done", "input_tokens": 10 * len(msgs), "cached_messages": k}))
        last = msgs[-1].get("content") if msgs else ""
        text = f"echo: {last if isinstance(last, str) else '[items]'}"
        await ws.send(json.dumps({"type": "chunk", "text_delta": text}))
        for i in range(self.args.chat_chunks):  # a long spoken reply: many big frames
            await ws.send(json.dumps({"type": "chunk", "text_delta": "", "audio_data": "A" * self.args.chunk_bytes}))
        stopped = False
        end = time.monotonic() + self.args.chat_delay
        while not stopped:  # a stop during generation ends early; anything else is an error
            try:
                extra = await asyncio.wait_for(ws.recv(), max(0.0, end - time.monotonic()))
            except asyncio.TimeoutError:
                break
            if self.note(extra)["type"] == "stop":
                stopped = True
            else:
                await ws.send(json.dumps({"type": "error", "error": "Unknown message type"}))
        rec = "rec_" + secrets.token_hex(8)
        done = {"type": "done", "text": text, "generated_tokens": 3, "input_tokens": 10 * len(msgs),
                "recording_session_id": rec}
        if stopped:
            done["stopped"] = True
        await ws.send(json.dumps(done))
        self.cached = prefix_hashes(msgs + [{"role": "assistant", "content": text}])

    async def session_loop(self, ws: ServerConnection, duplex: bool) -> tuple[int, str]:
        unit = 0
        sid = self.session or ""
        async for raw in ws:
            d = self.note(raw)
            t = d["type"]
            if t == "prepare":
                rec = "rec_" + secrets.token_hex(8)
                msg = {"type": "prepared", "prompt_length": 42, "recording_session_id": rec} if duplex else \
                    {"type": "prepared", "session_id": sid, "timeout_s": 180, "recording_session_id": rec}
                await ws.send(json.dumps(msg))
            elif t == "audio_chunk":
                if self.args.unit_delay:
                    await asyncio.sleep(self.args.unit_delay)
                obj = json.loads(raw) if self.args.echo else {}
                audio = obj.get("audio_base64", "") if self.args.echo else ""
                if duplex:
                    await ws.send(json.dumps({"type": "result", "is_listen": not audio, "text": "", "audio_data": audio,
                                              "end_of_turn": False, "current_time": unit, "cost_all_ms": 0.1,
                                              "server_send_ts": time.time()}))
                else:
                    await ws.send(json.dumps({"type": "chunk", "text_delta": "", "audio_data": audio,
                                              "audio_sample_rate": 24000, "chunk_index": unit}))
                unit += 1
            elif t == "pause":
                self.status = "duplex_paused"
                await ws.send(json.dumps({"type": "paused", "timeout": 60}))
            elif t == "resume":
                self.status = "duplex_active"
                await ws.send(json.dumps({"type": "resumed"}))
            elif t == "stop":
                await ws.send(json.dumps({"type": "stopped", "session_id": sid}))
                return 1000, ""
            elif t == "crash":
                return 4000, "asked to"
            else:
                await ws.send(json.dumps({"type": "error", "error": f"Unknown message type: {t!r}"}))
        return 1000, ""


async def amain(args: argparse.Namespace) -> None:
    """One fake worker per port (``--ports`` runs many in one process, for benchmarks)."""
    ports = [int(p) for p in args.ports.split(",")] if args.ports else [args.port]
    servers = []
    for i, port in enumerate(ports):
        fw = FakeWorker(argparse.Namespace(**{**vars(args), "index": args.index + i}))
        servers.append(await serve(fw.handler, "127.0.0.1", port, process_request=fw.process_request,
                                   max_size=None, compression=None, ping_interval=None))
    print(f"fake worker(s) on 127.0.0.1:{','.join(map(str, ports))}", flush=True)
    await asyncio.Future()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int)
    p.add_argument("--ports", help="comma-separated ports: one independent fake worker on each")
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--chat-delay", type=float, default=0.2, help="seconds between the first chunk and done")
    p.add_argument("--prefill-per-msg", type=float, default=0.0)
    p.add_argument("--load-delay", type=float, default=0.0, help="seconds reported as loading after start")
    p.add_argument("--unit-delay", type=float, default=0.0)
    p.add_argument("--echo", action="store_true", help="echo each audio_chunk's audio back")
    p.add_argument("--linger", type=float, default=0.0, help="seconds still busy after a session ends")
    p.add_argument("--stuck", action="store_true", help="never report idle again after a session")
    p.add_argument("--busy-first", type=int, default=0, help="refuse this many sessions with 'Worker busy'")
    p.add_argument("--chat-chunks", type=int, default=0, help="extra big chunk frames in a chat reply")
    p.add_argument("--chunk-bytes", type=int, default=100_000, help="size of each extra chunk frame")
    args = p.parse_args()
    try:
        asyncio.run(amain(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
