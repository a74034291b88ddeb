"""Prometheus ``/metrics`` with real processes on loopback (docs/metrics.md): a gateway in front of
the zero-compute fake worker (sessions, waits and ETA error, relay counters, refusals, a worker
that dies, who may scrape), two gateway processes merged in multiprocess mode, and a real worker
(a chat, a half-duplex turn and a few duplex units move its stage histograms). Every scrape is
parsed with ``prometheus_client.parser``, as a Prometheus server would read it."""
from __future__ import annotations

import asyncio
import json
import re
import signal
import time

import httpx
import numpy as np
import websockets
from prometheus_client.parser import text_string_to_metric_families

from omniserve.gateway.metrics import prepare_multiprocess
from omniserve.metrics_common import ETA_ERROR_BUCKETS
from tests.conftest import piper_speech, silence
from tests.support.gateway_procs import REPO, start_fake_worker, start_gateway

from .conftest import TEST_ENV, b64, chunks, connect, recv_until, start_worker, stop_worker, wait_health, wait_idle
from .test_gateway_queue import finish_session, hold_worker, recv, recv_type

Samples = dict[tuple[str, frozenset], float]


def parse(text: str) -> Samples:
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def scrape(base: str, token: str | None, host: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if host:
        headers["Host"] = host
    return httpx.get(base + "/metrics", headers=headers, timeout=10, trust_env=False)


def metrics(base: str, token: str | None) -> Samples:
    r = scrape(base, token)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return parse(r.text)


def val(m: Samples, name: str, **labels: str) -> float:
    return m.get((name, frozenset(labels.items())), 0.0)


def grew(after: Samples, before: Samples, name: str, **labels: str) -> float:
    return val(after, name, **labels) - val(before, name, **labels)


async def chat(g, text: str) -> list[dict]:
    ws = await websockets.connect(g.ws + "/ws/chat", max_size=None)
    await ws.send(json.dumps({"messages": [{"role": "user", "content": text}]}))
    out = [await recv(ws)]
    while out[-1]["type"] not in ("done", "error"):
        out.append(await recv(ws))
    await ws.close()
    return out


async def until(check, timeout: float = 5.0):
    """``check()`` once it is truthy (scrapes race the gateway's own bookkeeping by a few ms)."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.05)


# --------------------------------------------------------------------- names in the docs
async def test_docs_and_dashboard_name_what_is_served():
    """Every metric docs/metrics.md or the Grafana dashboard names is served, and every served one
    is documented."""
    from types import SimpleNamespace

    from omniserve.gateway.metrics import GatewayMetrics
    from omniserve.worker.metrics import WorkerMetrics
    from omniserve.worker.state import WorkerRuntime

    texts = [(await GatewayMetrics(SimpleNamespace(workers=[]), []).scrape()).decode(),
             WorkerMetrics(WorkerRuntime(0, "embedded").health).exposition().decode()]
    families, series = set(), set()
    for text in texts:
        for fam in text_string_to_metric_families(text):
            name = fam.name + ("_total" if fam.type == "counter" else "")
            families.add(name)
            series.add(name)
            if fam.type == "histogram":
                series |= {fam.name + s for s in ("_bucket", "_count", "_sum")}
    assert len(families) == 17          # 9 gateway, 8 worker
    docs = (REPO / "docs" / "metrics.md").read_text()
    dashboard = (REPO / "docs" / "grafana-omniserve.json").read_text()
    named = set(re.findall(r"omniserve_(?:gateway|worker)_\w+", docs))
    assert named <= series, named - series
    assert families <= named, families - named
    exprs = [t["expr"] for p in json.loads(dashboard)["panels"] for t in p.get("targets", [])]
    used = {n for e in exprs for n in re.findall(r"omniserve_(?:gateway|worker)_\w+", e)}
    assert used <= series, used - series
    assert len(used) >= 16


# ------------------------------------------------------------------------------- gateway
async def test_gateway_metrics_follow_sessions_and_need_a_token(tmp_path):
    w = start_fake_worker(tmp_path, "--chat-delay", "0.3", "--busy-first", "1")
    g = start_gateway(tmp_path, [w.url], 1, {"OMNISERVE_GATEWAY__METRICS_TOKEN": "scrape-me",
                                            "OMNISERVE_GATEWAY__MAX_QUEUE_SIZE": "1"})
    try:
        # who may scrape: the admin token or the metrics token, nothing else; any Host for /metrics only
        assert scrape(g.url, None).status_code == 401
        assert scrape(g.url, "wrong").status_code == 401
        assert scrape(g.url, g.token).status_code == 200
        assert scrape(g.url, "scrape-me").status_code == 200
        assert scrape(g.url, "scrape-me", host=f"10.1.2.3:{g.port}").status_code == 200
        assert httpx.get(g.url + "/status", headers={"Host": f"10.1.2.3:{g.port}"}, trust_env=False).status_code == 421
        m0 = metrics(g.url, "scrape-me")
        assert val(m0, "omniserve_gateway_queue_length") == 0
        assert val(m0, "omniserve_gateway_slots", state="idle") == 1

        # the worker refuses once ("Worker busy"): requeued, then served; the holder keeps it busy
        holder = await hold_worker(g, "omni_metrics")
        for _ in range(3):
            await holder.send(json.dumps({"type": "audio_chunk", "audio_base64": "AAAA" * 100}))
            await recv_type(holder, "result")
        # a chat waits behind it (told an ETA), a second one finds the queue full
        waiting = await websockets.connect(g.ws + "/ws/chat", max_size=None)
        t_sent = time.monotonic()
        await waiting.send(json.dumps({"messages": [{"role": "user", "content": "wait"}]}))
        queued = await recv(waiting)
        assert queued["type"] == "queued"
        full = await chat(g, "no room")
        assert full[-1]["type"] == "error" and "full" in full[-1]["error"].lower()
        m1 = await until(lambda: (m := metrics(g.url, "scrape-me")) and val(
            m, "omniserve_gateway_sessions_total", mode="chat", reason="refused") and m)
        assert m1, "the refused chat was not counted"
        assert val(m1, "omniserve_gateway_queue_length") == 1
        assert val(m1, "omniserve_gateway_sessions_active", mode="chat") == 1
        assert val(m1, "omniserve_gateway_sessions_active", mode="omni_duplex") == 1
        assert val(m1, "omniserve_gateway_slots", state="idle") == 0
        assert val(m1, "omniserve_gateway_errors_total", kind="worker_refused") == 1
        assert val(m1, "omniserve_gateway_errors_total", kind="queue_full") == 1

        await asyncio.sleep(0.3)
        await finish_session(holder)
        assert (await recv_type(waiting, "queue_done"))["type"] == "queue_done"
        client_wait = time.monotonic() - t_sent
        assert (await recv_type(waiting, "done"))["text"] == "echo: wait"
        await waiting.close()
        # a client that leaves while queued behind another holder
        assert await until(lambda: val(metrics(g.url, "scrape-me"), "omniserve_gateway_slots", state="idle") == 1)
        holder = await hold_worker(g, "adx_metrics")
        leaver = await websockets.connect(g.ws + "/ws/half_duplex/hd_leaver", max_size=None)
        assert (await recv(leaver))["type"] == "queued"
        await leaver.close()
        await finish_session(holder)

        def settled():
            m = metrics(g.url, "scrape-me")
            return m if val(m, "omniserve_gateway_sessions_total", mode="half_duplex_audio", reason="client_left") \
                and val(m, "omniserve_gateway_slots", state="idle") == 1 else None
        m2 = await until(settled)
        assert m2, "the gateway never counted the session that left"
        assert val(m2, "omniserve_gateway_sessions_total", mode="omni_duplex", reason="normal") == 1
        assert val(m2, "omniserve_gateway_sessions_total", mode="audio_duplex", reason="normal") == 1
        assert val(m2, "omniserve_gateway_sessions_total", mode="chat", reason="normal") == 1
        assert all(val(m2, "omniserve_gateway_sessions_active", mode=k) == 0
                   for k in ("chat", "omni_duplex", "audio_duplex", "half_duplex_audio"))
        # waits: one per served session; the ETA error only where an estimate was told (the chat)
        assert val(m2, "omniserve_gateway_queue_wait_seconds_count", mode="omni_duplex") == 1
        assert val(m2, "omniserve_gateway_queue_wait_seconds_count", mode="chat") == 1
        chat_wait = val(m2, "omniserve_gateway_queue_wait_seconds_sum", mode="chat")
        assert 0.3 < chat_wait < client_wait           # it waited for the holder to stop
        assert val(m2, "omniserve_gateway_eta_error_seconds_count", mode="chat") == 1
        err = chat_wait - queued["estimated_wait_s"]          # told ~90 s (the omni estimate), waited < 1 s
        assert err < -60
        for le in ETA_ERROR_BUCKETS:                          # a histogram with negative buckets has no _sum
            if abs(le - err) > 0.2:
                assert val(m2, "omniserve_gateway_eta_error_seconds_bucket", mode="chat", le=str(le)) == (err <= le)
        assert val(m2, "omniserve_gateway_eta_error_seconds_count", mode="omni_duplex") == 0
        # relay counters: prepare + 3 units + stop up, prepared + 3 results + stopped down (the refused
        # try carried nothing); bytes are the frames' characters
        up = val(m2, "omniserve_gateway_relay_frames_total", mode="omni_duplex", direction="up")
        down = val(m2, "omniserve_gateway_relay_frames_total", mode="omni_duplex", direction="down")
        assert up >= 5 and down >= 5, (up, down)
        assert val(m2, "omniserve_gateway_relay_bytes_total", mode="omni_duplex", direction="up") > 3 * 400
        assert val(m2, "omniserve_gateway_relay_frames_total", mode="chat", direction="down") >= 3
        assert val(m2, "omniserve_gateway_queue_wait_seconds_count", mode="half_duplex_audio") == 0

        # the worker dies mid-session: the client's session ended by a worker failure
        assert await until(lambda: val(metrics(g.url, "scrape-me"), "omniserve_gateway_slots", state="idle") == 1)
        holder = await hold_worker(g, "omni_killed")
        w.proc.send_signal(signal.SIGKILL)
        assert (await recv_type(holder, "error"))["type"] == "error"
        m3 = await until(lambda: (m := metrics(g.url, "scrape-me")) and val(
            m, "omniserve_gateway_sessions_total", mode="omni_duplex", reason="worker_failed") and m)
        assert m3, "no worker_failed session"
        assert val(m3, "omniserve_gateway_errors_total", kind="worker_lost") == 1
        assert await until(lambda: val(metrics(g.url, "scrape-me"), "omniserve_gateway_slots", state="offline") == 1)
    finally:
        g.stop()
        w.stop()


async def test_gateway_processes_merge_in_multiprocess_mode(tmp_path):
    """Two gateway processes sharing one metrics folder (what ``--processes N`` sets up): either
    one's /metrics shows both; a process that died stops counting in the live gauges."""
    (tmp_path / "prom").mkdir()
    (tmp_path / "prom" / "counter_999999.db").write_bytes(b"")     # a file of an earlier run: emptied
    env = prepare_multiprocess(tmp_path / "prom")
    assert not list((tmp_path / "prom").iterdir())
    w1, w2 = start_fake_worker(tmp_path, "--chat-delay", "0.1"), start_fake_worker(tmp_path, "--chat-delay", "0.1")
    data = tmp_path / "gw_data"          # one data folder: one admin token, like the members of one group
    a = start_gateway(tmp_path, [w1.url], 1, env, data_dir=data)
    b = start_gateway(tmp_path, [w2.url], 1, env, data_dir=data)
    try:
        for g in (a, b, a):
            assert (await chat(g, "hello"))[-1]["type"] == "done"
        for g in (a, b):
            m = await until(lambda g=g: (m := metrics(g.url, g.token)) and val(
                m, "omniserve_gateway_sessions_total", mode="chat", reason="normal") == 3 and m)
            assert m, f"gateway {g.port} does not see both processes' sessions"
            assert val(m, "omniserve_gateway_queue_wait_seconds_count", mode="chat") == 3
        held = await hold_worker(b, "omni_mp")
        assert await until(lambda: val(metrics(a.url, a.token), "omniserve_gateway_sessions_active",
                                       mode="omni_duplex") == 1)
        b.proc.send_signal(signal.SIGKILL)
        b.proc.wait(5)
        assert await until(lambda: val(metrics(a.url, a.token), "omniserve_gateway_sessions_active",
                                       mode="omni_duplex") == 0), "a dead process's live gauge still counts"
        await held.close()
        assert val(metrics(a.url, a.token), "omniserve_gateway_sessions_total", mode="chat", reason="normal") == 3
    finally:
        a.stop()
        b.stop()
        w1.stop()
        w2.stop()


async def test_gateway_group_reports_every_process(tmp_path, redis_server):
    """``--processes 2`` (Redis): sessions served by either process show in /metrics of both."""
    from prometheus_client.multiprocess import MultiProcessCollector

    w = start_fake_worker(tmp_path, "--chat-delay", "0.05")
    g = start_gateway(tmp_path, [w.url], 0, None, "--processes", "2", "--redis-url", redis_server.url)
    try:
        folder = g.data_dir / "metrics" / f"gateway_{g.port}"

        def served_by() -> list[float]:     # chats each process counted, from its own file
            out = []
            for f in folder.glob("counter_*.db"):
                fams = MultiProcessCollector.merge([str(f)])
                out.append(sum(s.value for fam in fams for s in fam.samples
                               if s.name == "omniserve_gateway_sessions_total" and s.labels.get("mode") == "chat"))
            return out

        assert await until(lambda: httpx.get(g.url + "/health", trust_env=False).json().get("workers_ready"), 20)
        n = 0
        while n < 40 and sum(1 for c in served_by() if c) < 2:     # new connections spread over both processes
            assert (await chat(g, f"q{n}"))[-1]["type"] == "done"
            n += 1
        assert sum(1 for c in served_by() if c) == 2, served_by()
        for _ in range(6):                                          # whichever process answers: the group's total
            m = await until(lambda: (m := metrics(g.url, g.token)) and val(
                m, "omniserve_gateway_sessions_total", mode="chat", reason="normal") == n and m)
            assert m, f"a scrape did not show all {n} chats"
            assert val(m, "omniserve_gateway_queue_wait_seconds_count", mode="chat") == n
    finally:
        g.stop()
        w.stop()


# -------------------------------------------------------------------------------- worker
async def test_worker_metrics_token_rules(tmp_path):
    """A worker with a worker token and a metrics token (its engine fails to load at once, so
    nothing heavy runs): /metrics takes either token, the metrics token opens nothing else."""
    env = dict(TEST_ENV, OMNISERVE_WORKER__TOKEN="wtok", OMNISERVE_WORKER__METRICS_TOKEN="mtok",
               OMNISERVE_ENGINE__ASR_MODEL="no-such-model")
    h = start_worker(tmp_path, env)
    try:
        hl = wait_health(h, {"error"}, 120)
        assert "metrics" in hl["capabilities"]
        assert scrape(h.base, None).status_code == 401
        assert scrape(h.base, "nope").status_code == 401
        health = httpx.get(h.base + "/health", headers={"Authorization": "Bearer mtok"}, trust_env=False)
        assert health.status_code == 401                  # the metrics token opens /metrics only
        assert scrape(h.base, "wtok").status_code == 200
        m = metrics(h.base, "mtok")
        assert val(m, "omniserve_worker_slots", state="error") == 1
        assert val(m, "omniserve_worker_slots", state="idle") == 0
    finally:
        stop_worker(h)


QUESTION = [{"role": "user", "content": "Say hello in three words."}]


async def test_worker_metrics_move_with_real_sessions(idle):
    before = metrics(idle.base, idle.token)
    # a chat with speech
    ws = await connect(idle.ws + "/ws/chat")
    await ws.send(json.dumps({"messages": QUESTION, "streaming": True, "tts": {"enabled": True},
                              "generation": {"max_new_tokens": 16, "temperature": 0.0}}))
    msgs = await recv_until(ws, {"done", "error"}, 180)
    assert msgs[-1]["type"] == "done", msgs[-1]
    await ws.close()
    await wait_idle(idle)
    # one half-duplex turn
    ws = await connect(idle.ws + "/ws/half_duplex/hd_metrics")
    await ws.send(json.dumps({"type": "prepare", "system_prompt": "Answer briefly.", "config": {
        "vad": {"min_silence_duration_ms": 600}, "generation": {"max_new_tokens": 16, "temperature": 0.0},
        "tts": {"enabled": True}, "session": {"timeout_s": 60}}}))
    await recv_until(ws, "prepared", 60)
    await asyncio.sleep(0.6)       # VAD results are ignored for 0.5 s after prepare
    for c in chunks(np.concatenate([silence(0.5), piper_speech("What is two plus two?"), silence(1.5)]), 8000):
        await ws.send(json.dumps({"type": "audio_chunk", "audio_base64": b64(c)}))
    await recv_until(ws, "turn_done", 180)
    await ws.send(json.dumps({"type": "stop"}))
    await recv_until(ws, "stopped", 30)
    await ws.close()
    await wait_idle(idle)
    # a few duplex units
    ws = await connect(idle.ws + "/ws/duplex/adx_metrics")
    await ws.send(json.dumps({"type": "prepare", "system_prompt": "Answer briefly.", "config": {"chunk_ms": 1000}}))
    await recv_until(ws, "prepared", 60)
    for _ in range(3):
        await ws.send(json.dumps({"type": "audio_chunk", "audio_base64": b64(silence(1.0))}))
        await recv_until(ws, "result", 60)
    await ws.send(json.dumps({"type": "stop"}))
    await recv_until(ws, "stopped", 30)
    await ws.close()
    await wait_idle(idle)

    after = metrics(idle.base, idle.token)
    for name in ("omniserve_worker_ttft_seconds_count", "omniserve_worker_ttfa_seconds_count"):
        assert grew(after, before, name, mode="chat") == 1, name
        assert grew(after, before, name, mode="half_duplex_audio") == 1, name
    assert grew(after, before, "omniserve_worker_end_of_speech_to_first_audio_seconds_count",
                mode="half_duplex_audio") == 1
    eos = grew(after, before, "omniserve_worker_end_of_speech_to_first_audio_seconds_sum", mode="half_duplex_audio")
    assert 0 < eos < 60
    assert grew(after, before, "omniserve_worker_ttft_seconds_sum", mode="chat") > 0
    assert grew(after, before, "omniserve_worker_duplex_unit_compute_seconds_count", mode="audio_duplex") == 3
    assert grew(after, before, "omniserve_worker_duplex_unit_wall_seconds_count", mode="audio_duplex") == 3
    assert grew(after, before, "omniserve_worker_duplex_unit_wall_seconds_sum", mode="audio_duplex") > 0
    assert grew(after, before, "omniserve_worker_sessions_total", mode="chat", reason="done") == 1
    assert grew(after, before, "omniserve_worker_sessions_total", mode="half_duplex_audio", reason="stop") == 1
    assert grew(after, before, "omniserve_worker_sessions_total", mode="audio_duplex", reason="stop") == 1
    assert val(after, "omniserve_worker_slots", state="idle") == 1
    assert sum(v for (n, _), v in after.items() if n == "omniserve_worker_errors_total") == \
        sum(v for (n, _), v in before.items() if n == "omniserve_worker_errors_total")

    # a second client while the worker is busy is refused, and counted so
    ws = await connect(idle.ws + "/ws/duplex/omni_busy")
    await ws.send(json.dumps({"type": "prepare", "system_prompt": "hi", "config": {"chunk_ms": 1000}}))
    await recv_until(ws, "prepared", 60)
    m_busy = metrics(idle.base, idle.token)
    assert val(m_busy, "omniserve_worker_slots", state="duplex_active") == 1
    other = await connect(idle.ws + "/ws/chat")
    assert (await recv_until(other, "error", 10))[-1]["error"] == "Worker busy"
    await ws.send(json.dumps({"type": "stop"}))
    await recv_until(ws, "stopped", 30)
    await ws.close()
    last = metrics(idle.base, idle.token)
    assert grew(last, after, "omniserve_worker_sessions_total", mode="chat", reason="refused") == 1
