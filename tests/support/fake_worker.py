"""A zero-compute test worker that speaks the worker protocol (for gateway scheduling tests only).

It serves ``/health`` shaped exactly like a real worker's (``protocol.worker.WorkerHealth``, plus
``sessions_served``) and the three WebSocket endpoints with configurable delays, and records a
digest of every frame it received (``GET /debug/received``: the latest session's;
``/debug/received?slot=N``: slot N's latest) so tests can check what the gateway forwarded, byte
for byte.

    python -m tests.support.fake_worker --port 22490 [--slots 3] [--chat-delay 0.5] [--load-delay 2]

With ``--slots N`` it serves N sessions at once, like a worker whose backend is a remote server:
a session names its slot in ``SLOT_HEADER`` (none: any idle slot); a busy slot, or a malformed or
out-of-range header, is refused ("Worker busy", close 1013) as the real worker does.

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
from dataclasses import dataclass, field
from typing import Optional
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from omniserve.protocol import modes
from omniserve.protocol.affinity import longest_cached_prefix, prefix_hashes
from omniserve.protocol.worker import (BUSY_STATUSES, MAX_SLOTS, SLOT_HEADER, Capability, SlotHealth, WorkerHealth,
                                       WorkerStatus, slot_from_header)

DEFAULT_CAPABILITIES = "chat,half_duplex,duplex"   # what this fake serves (no /ws/realtime)


@dataclass
class FakeSlot:
    index: int
    status: WorkerStatus = WorkerStatus.IDLE
    session: Optional[str] = None
    session_type: Optional[str] = None
    started_at: Optional[float] = None
    received: list[dict] = field(default_factory=list)

    def health(self, loading: bool, now: float) -> SlotHealth:
        busy = self.status in BUSY_STATUSES and self.started_at is not None
        return SlotHealth(index=self.index, status=WorkerStatus.LOADING if loading else self.status,
                          session_id=self.session, session_type=self.session_type,
                          elapsed_s=round(now - self.started_at, 3) if busy else None,
                          paused=self.status == WorkerStatus.DUPLEX_PAUSED)


class FakeWorker:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.started = time.monotonic()
        self.loading = args.load_delay > 0
        self.slots = [FakeSlot(i) for i in range(args.slots)]
        self.capabilities = [Capability(c).value for c in args.capabilities.split(",") if c]
        self.cached: list[str] = []
        self.received: list[dict] = []         # the latest session's frames
        self.sessions_served = 0

    # ------------------------------------------------------------------ http
    def health(self) -> dict:
        if self.loading and time.monotonic() - self.started >= self.args.load_delay:
            self.loading = False
        now = time.time()
        slots = [s.health(self.loading, now) for s in self.slots]
        s0, first = slots[0], self.slots[0]
        held = s0.status in BUSY_STATUSES
        busy = [s for s in slots if s.status in BUSY_STATUSES]
        h = WorkerHealth(worker_status=s0.status, model_loaded=not self.loading, index=self.args.index,
                         backend="fake", slots_total=len(slots),
                         slots_free=sum(1 for s in slots if s.status == WorkerStatus.IDLE), slots=slots,
                         paused=bool(busy) and all(s.paused for s in busy), capabilities=self.capabilities,
                         cached_prefix_hashes=self.cached, current_session_id=first.session,
                         kv_cache_length=10 * len(self.cached),
                         session_started_at=first.started_at if held else None,
                         session_type=s0.session_type if held else None, elapsed_s=s0.elapsed_s if held else None)
        return h.model_dump(mode="json") | {"sessions_served": self.sessions_served}

    def process_request(self, conn: ServerConnection, request: Request) -> Optional[Response]:
        token = os.environ.get("OMNISERVE_WORKER__TOKEN")
        if token and request.headers.get("Authorization") != f"Bearer {token}":
            return Response(401, "Unauthorized", Headers([("Content-Length", "0")]), b"")
        url = urlsplit(request.path)
        if url.path == "/health":
            body = json.dumps(self.health())
        elif url.path == "/debug/received":
            slot = parse_qs(url.query).get("slot")
            try:
                body = json.dumps(self.slots[int(slot[0])].received if slot else self.received)
            except (ValueError, IndexError):
                return Response(404, "Not Found", Headers([("Content-Length", "0")]), b"")
        else:
            return None
        return Response(200, "OK", Headers([("Content-Type", "application/json"),
                                            ("Content-Length", str(len(body)))]), body.encode())

    # -------------------------------------------------------------------- ws
    def claim(self, header: Optional[str]) -> FakeSlot | str:
        """The slot this session gets, or why it is refused (the real worker's texts)."""
        if self.loading:
            return "Worker loading"
        try:
            asked = slot_from_header(header, len(self.slots))
        except ValueError as e:
            return f"Worker busy ({e})"
        if self.args.busy_first > 0:
            self.args.busy_first -= 1
            return "Worker busy"
        wanted = self.slots if asked is None else [self.slots[asked]]
        free = next((s for s in wanted if s.status == WorkerStatus.IDLE), None)
        return free if free is not None else "Worker busy"

    async def handler(self, ws: ServerConnection) -> None:
        path = ws.request.path
        self.health()                              # notices the end of --load-delay
        got = self.claim(ws.request.headers.get(SLOT_HEADER))
        if isinstance(got, str):
            await ws.send(json.dumps({"type": "error", "error": got, "message": got}))
            await ws.close(1013)
            return
        slot = got                                 # claimed before any await: no other session can take it
        slot.status = WorkerStatus.BUSY_CHAT       # until the path says which mode
        slot.received = self.received = []
        slot.session = path.rsplit("/", 1)[-1]
        slot.started_at = time.time()
        self.sessions_served += 1
        code, reason = 1000, ""
        try:
            if path == "/ws/chat":
                slot.session_type = modes.CHAT.request_type
                await self.chat(ws, slot)
            elif path.startswith("/ws/half_duplex/"):
                slot.status, slot.session_type = WorkerStatus.BUSY_HALF_DUPLEX, modes.HALF_DUPLEX.request_type
                code, reason = await self.session_loop(ws, slot, duplex=False)
            elif path.startswith("/ws/duplex/"):
                slot.status, slot.session_type = WorkerStatus.DUPLEX_ACTIVE, modes.duplex_variant(slot.session)
                code, reason = await self.session_loop(ws, slot, duplex=True)
            else:
                code = 1008
        except ConnectionClosed:
            pass
        finally:
            slot.session = slot.session_type = None
            # like the real worker: idle first, then the socket closes (the gateway trusts that order)
            if self.args.stuck:
                slot.status = WorkerStatus.BUSY_CHAT   # never idle again (a stuck engine), never closes
                await ws.wait_closed()
            else:
                if self.args.linger:
                    await asyncio.sleep(self.args.linger)
                slot.status, slot.started_at = WorkerStatus.IDLE, None
                await ws.close(code, reason)

    @staticmethod
    def note(slot: FakeSlot, raw: str) -> dict:
        try:
            t = json.loads(raw).get("type")
        except ValueError:
            t = None
        d = {"type": t, "len": len(raw), "sha256": hashlib.sha256(raw.encode()).hexdigest()}
        slot.received.append(d)
        return d

    async def chat(self, ws: ServerConnection, slot: FakeSlot) -> None:
        raw = await ws.recv()
        self.note(slot, raw)
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
            if self.note(slot, extra)["type"] == "stop":
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

    async def session_loop(self, ws: ServerConnection, slot: FakeSlot, duplex: bool) -> tuple[int, str]:
        unit = 0
        sid = slot.session or ""
        async for raw in ws:
            d = self.note(slot, raw)
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
                slot.status = WorkerStatus.DUPLEX_PAUSED
                await ws.send(json.dumps({"type": "paused", "timeout": 60}))
            elif t == "resume":
                slot.status = WorkerStatus.DUPLEX_ACTIVE
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


def slots_arg(text: str) -> int:
    n = int(text)
    if not 1 <= n <= MAX_SLOTS:
        raise argparse.ArgumentTypeError(f"--slots must be 1 to {MAX_SLOTS}")
    return n


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int)
    p.add_argument("--ports", help="comma-separated ports: one independent fake worker on each")
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--slots", type=slots_arg, default=1, metavar="N", help=f"sessions served at once (1-{MAX_SLOTS})")
    p.add_argument("--capabilities", default=DEFAULT_CAPABILITIES,
                   help=f"comma-separated capabilities advertised in /health (default {DEFAULT_CAPABILITIES})")
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
