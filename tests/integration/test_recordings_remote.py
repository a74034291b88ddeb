"""Recordings without a shared disk: each is served, through the gateway, by the worker that made it.

Two REAL workers (real engine, a worker token, each its own data folder) behind one gateway
process with a third data folder. A half-duplex session on each worker (``prepare`` is the
cheapest thing that records: ``prepared`` carries the recording id), then through the gateway:
metadata, recording.json, an asset (and a Range of it), the zip, a comment, a browser recording
upload and the client's diagnostics — each found in the data folder of the worker that made the
recording and nowhere else. Unknown ids are 404; a gateway that never saw a recording (restarted)
finds it by asking the workers; a worker that cannot be asked makes its recordings 503, not 404.

Also here: ``RecordingProxy.owner`` (registry first, then asking) against two engine-less workers
(``tests/support/recordings_worker.py``), the owner registry on a real ``redis-server`` and in
process, and the cleanup by age and storage cap (``omniserve.recordings.cleanup``).
"""
from __future__ import annotations

import asyncio
import io
import json
import os
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import websockets
from fastapi import HTTPException

from omniserve.gateway.recording_owners import LocalOwners, RedisOwners
from omniserve.gateway.recording_proxy import RecordingProxy
from omniserve.gateway.state.link import RedisLink
from omniserve.recordings.cleanup import cleanup
from omniserve.recordings.store import RecordingStore
from tests.support.gateway_procs import GatewayProc, free_port, start_gateway
from tests.support.recordings_worker import start_recordings_worker

from .conftest import LOAD_TIMEOUT_S, TEST_ENV, WorkerHandle, start_worker, stop_worker, wait_health

TOKEN = "wt-recordings-remote-0123456789abcdef"
WEBM = b"\x1aE\xdf\xa3" + b"\x00" * 200


@dataclass
class Recorded:
    rec_id: str
    key: str                   # the client's session id (diagnostics before ``prepared`` are kept under it)
    owner: WorkerHandle
    other: WorkerHandle

    @property
    def folder(self) -> Path:
        return self.owner.data_dir / "sessions" / self.rec_id


def _client(g: GatewayProc) -> httpx.Client:
    return httpx.Client(base_url=g.url, trust_env=False, timeout=30)


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def workers(tmp_path_factory):
    hs = [start_worker(tmp_path_factory.mktemp(f"recw{i}"), {**TEST_ENV, "OMNISERVE_WORKER__TOKEN": TOKEN})
          for i in range(2)]
    try:
        for h in hs:
            wait_health(h, {"idle"}, LOAD_TIMEOUT_S)
        yield hs
    finally:
        for h in hs:
            stop_worker(h)


@pytest.fixture(scope="module")
def gw(tmp_path_factory, workers):
    g = start_gateway(tmp_path_factory.mktemp("recgw"), [w.base for w in workers], 2,
                      {"OMNISERVE_GATEWAY__WORKER_TOKEN": TOKEN})
    yield g
    g.stop()


async def _recv_until(ws, kind: str, timeout: float = 60.0) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            m = json.loads(await ws.recv())
            if m["type"] == kind:
                return m
            assert m["type"] != "error", m


async def _two_sessions(g: GatewayProc) -> list[tuple[str, str]]:
    """A half-duplex session on each worker (the first holds one, so the second gets the other),
    with a client_diagnostic before ``prepare`` and one after."""
    prepare = json.dumps({"type": "prepare", "system_prompt": "Answer briefly.",
                          "config": {"tts": {"enabled": False}, "session": {"timeout_s": 60}}})
    socks, out = [], []
    try:
        for key in ("rr_first", "rr_second"):
            ws = await websockets.connect(f"{g.ws}/ws/half_duplex/{key}", max_size=None, open_timeout=15)
            socks.append(ws)
            await _recv_until(ws, "queue_done")
            await ws.send(json.dumps({"type": "client_diagnostic", "before": key}))
            await ws.send(prepare)
            prepared = await _recv_until(ws, "prepared")
            await ws.send(json.dumps({"type": "client_diagnostic", "after": key, "ua": "pytest"}))
            out.append((prepared["recording_session_id"], key))
        for ws in socks:
            await ws.send(json.dumps({"type": "stop"}))
            await _recv_until(ws, "stopped", 30)
    finally:
        for ws in socks:
            await ws.close()
    return out


@pytest.fixture(scope="module")
def recorded(gw, workers) -> list[Recorded]:
    out = []
    for rec_id, key in asyncio.run(_two_sessions(gw)):
        holders = [w for w in workers if (w.data_dir / "sessions" / rec_id).is_dir()]
        assert len(holders) == 1, (rec_id, holders)
        owner = holders[0]
        out.append(Recorded(rec_id, key, owner, next(w for w in workers if w is not owner)))
    assert out[0].owner is not out[1].owner, "both sessions ran on one worker"
    for r in out:   # the session ended: its recording is complete
        deadline = time.monotonic() + 10
        while json.loads((r.folder / "meta.json").read_text())["status"] != "complete":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    return out


# ---------------------------------------------------------------------------------- served
def test_each_recording_is_served_by_the_worker_that_made_it(gw, recorded):
    with _client(gw) as c:
        for r in recorded:
            meta = c.get(f"/api/sessions/{r.rec_id}")
            assert meta.status_code == 200, meta.text
            m = meta.json()
            assert m["session_id"] == r.rec_id and m["recording_session_id"] == r.rec_id and m["label"] == r.key
            assert {"meta.json", "recording.json"} <= set(m["files"])
            assert not (r.other.data_dir / "sessions" / r.rec_id).exists()
            timeline = c.get(f"/api/sessions/{r.rec_id}/recording")
            assert timeline.status_code == 200 and timeline.headers["content-type"].startswith("application/json")
            assert timeline.json()["recording_session_id"] == r.rec_id
            assert timeline.json() == json.loads((r.folder / "recording.json").read_text())
            asset = c.get(f"/api/sessions/{r.rec_id}/assets/meta.json")
            assert asset.status_code == 200 and asset.content == (r.folder / "meta.json").read_bytes()
            part = c.get(f"/api/sessions/{r.rec_id}/assets/meta.json", headers={"Range": "bytes=0-9"})
            assert part.status_code == 206 and part.content == asset.content[:10]
            assert part.headers["content-range"].startswith("bytes 0-9/")
            z = c.get(f"/api/sessions/{r.rec_id}/download")
            assert z.status_code == 200 and z.headers["content-type"] == "application/zip"
            assert f'filename="{r.rec_id}.zip"' in z.headers["content-disposition"]
            names = zipfile.ZipFile(io.BytesIO(z.content)).namelist()
            assert {"meta.json", "recording.json"} <= set(names)
            assert zipfile.ZipFile(io.BytesIO(z.content)).read("meta.json") == (r.folder / "meta.json").read_bytes()
            for resp in (meta, timeline, asset, part, z):   # nothing of the gateway⇄worker link leaks out
                assert TOKEN not in resp.text[:100000] and "authorization" not in resp.headers


def test_comments_and_uploads_are_stored_with_the_recording(gw, recorded):
    with _client(gw) as c:
        for r in recorded:
            posted = c.post(f"/api/sessions/{r.rec_id}/comment", json={"text": f"nice {r.key}", "rating": 4})
            assert posted.status_code == 201, posted.text
            assert posted.json()["text"] == f"nice {r.key}" and posted.json()["rating"] == 4
            assert [x["text"] for x in c.get(f"/api/sessions/{r.rec_id}/comment").json()] == [f"nice {r.key}"]
            assert c.post(f"/api/sessions/{r.rec_id}/comment", json={"text": ""}).status_code == 422
            assert json.loads((r.folder / "comments.json").read_text())[0]["text"] == f"nice {r.key}"
            up = c.post(f"/api/sessions/{r.rec_id}/upload-recording", content=WEBM, headers={"Content-Type": "video/webm"})
            assert up.status_code == 200 and up.json() == {"stored": "client_recording.webm", "bytes": len(WEBM)}
            assert (r.folder / "client_recording.webm").read_bytes() == WEBM
            bad = c.post(f"/api/sessions/{r.rec_id}/upload-recording", content=b"#!/bin/sh\nrm -rf /" * 4,
                         headers={"Content-Type": "video/webm"})
            assert bad.status_code == 415
            assert "client_recording.webm" in c.get(f"/api/sessions/{r.rec_id}").json()["files"]
            assert not (r.other.data_dir / "sessions" / r.rec_id).exists()


def test_client_diagnostics_reach_the_worker_of_their_session(gw, recorded):
    with _client(gw) as c:
        for r in recorded:
            url = f"/api/sessions/{r.rec_id}/assets/client_diagnostics.jsonl"
            deadline = time.monotonic() + 10        # handed to the worker off the relay's path
            while (got := c.get(url)).status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert got.status_code == 200, got.text
            lines = [json.loads(x) for x in got.text.splitlines()]
            assert lines == [{"type": "client_diagnostic", "after": r.key, "ua": "pytest"}]
            early = r.owner.data_dir / "diagnostics" / r.key / "client_diagnostics.jsonl"
            assert json.loads(early.read_text()) == {"type": "client_diagnostic", "before": r.key}
            assert not (r.other.data_dir / "diagnostics" / r.key).exists()


def test_unknown_and_bad_ids_are_404(gw, recorded):
    rid = recorded[0].rec_id
    with _client(gw) as c:
        for path in ("/api/sessions/AAAAAAAAAAAAAAAAAAAAAA", "/api/sessions/AAAAAAAAAAAAAAAAAAAAAA/download",
                     "/api/sessions/AAAAAAAAAAAAAAAAAAAAAA/assets/meta.json", "/api/sessions/a.b/recording",
                     f"/api/sessions/{rid}/assets/nope.wav", f"/api/sessions/{rid}/assets/..%2F..%2Fworker.log",
                     f"/api/sessions/{rid}/assets/%2e%2e/%2e%2e/%2e%2e/health", f"/api/sessions/{rid}%0A"):
            r = c.get(path)
            assert r.status_code == 404, (path, r.status_code, r.text)
        assert c.post("/api/sessions/AAAAAAAAAAAAAAAAAAAAAA/comment", json={"text": "x"}).status_code == 404
        assert c.post("/api/sessions/AAAAAAAAAAAAAAAAAAAAAA/upload-recording", content=WEBM,
                      headers={"Content-Type": "video/webm"}).status_code == 404


def test_worker_routes_take_the_worker_token(recorded):
    r = recorded[0]
    url = f"{r.owner.base}/recordings/{r.rec_id}"
    assert httpx.get(url, trust_env=False, timeout=10).status_code == 401
    assert httpx.get(url, trust_env=False, timeout=10, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert httpx.get(url, trust_env=False, timeout=10, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_the_gateway_disk_holds_no_session_files(gw, recorded):
    assert not (gw.data_dir / "sessions").exists() and not (gw.data_dir / "diagnostics").exists()
    names = {p.name for p in gw.data_dir.rglob("*")}
    assert not names & {"client_diagnostics.jsonl", "comments.json", "client_recording.webm", "recording.json"}


def test_a_restarted_gateway_asks_the_workers(tmp_path, workers, recorded):
    """No registry entry: the owner is found by asking every worker; one that cannot be asked
    makes an id no reachable worker holds 503 (it may be there), not 404."""
    dead = f"http://127.0.0.1:{free_port()}"
    g = start_gateway(tmp_path, [w.base for w in workers] + [dead], 2, {"OMNISERVE_GATEWAY__WORKER_TOKEN": TOKEN})
    try:
        with _client(g) as c:
            for r in recorded:
                m = c.get(f"/api/sessions/{r.rec_id}")
                assert m.status_code == 200 and m.json()["recording_session_id"] == r.rec_id
                assert c.get(f"/api/sessions/{r.rec_id}/assets/meta.json").content == (r.folder / "meta.json").read_bytes()
            missing = c.get("/api/sessions/AAAAAAAAAAAAAAAAAAAAAA")
            assert missing.status_code == 503 and "not reachable" in missing.json()["detail"]
    finally:
        g.stop()


def test_an_unreachable_owner_is_503(gw, recorded):
    """Last: stops one worker. The gateway knows the owner (it relayed the session) but cannot reach it."""
    r = recorded[1]
    stop_worker(r.owner)
    with _client(gw) as c:
        got = c.get(f"/api/sessions/{r.rec_id}")
        assert got.status_code == 503 and "not reachable" in got.json()["detail"], got.text
        assert c.get(f"/api/sessions/{recorded[0].rec_id}").status_code == 200   # the other worker's still are


# ------------------------------------------------------------------------- owner registry
async def test_the_registry_is_asked_first_then_the_workers(tmp_path):
    """``RecordingProxy.owner`` against two workers serving recordings (no engine): the registry's
    answer wins, an id it does not know is found by asking and remembered, and an owner the pool
    does not know is never sent the token."""
    ws = [start_recordings_worker(tmp_path, tmp_path / f"w{i}", {"OMNISERVE_WORKER__TOKEN": TOKEN}) for i in range(2)]
    for i, w in enumerate(ws):
        (tmp_path / f"w{i}" / "sessions" / "rec_same").mkdir(parents=True)
    (tmp_path / "w1" / "sessions" / "rec_only_b").mkdir(parents=True)
    owners = LocalOwners()
    proxy = RecordingProxy(owners, lambda: [w.url for w in ws], TOKEN)
    try:
        await owners.put("rec_same", ws[1].url)
        assert await proxy.owner("rec_same") == ws[1].url
        await owners.put("rec_same", ws[0].url)
        assert await proxy.owner("rec_same") == ws[0].url
        assert await owners.get("rec_only_b") is None
        assert await proxy.owner("rec_only_b") == ws[1].url          # asked
        await asyncio.sleep(0.05)
        assert await owners.get("rec_only_b") == ws[1].url           # and remembered
        with pytest.raises(HTTPException) as e:
            await proxy.owner("rec_nowhere")
        assert e.value.status_code == 404
        await owners.put("rec_gone", "http://127.0.0.1:9")            # a worker the pool no longer knows
        with pytest.raises(HTTPException) as e:
            await proxy.owner("rec_gone")
        assert e.value.status_code == 503
    finally:
        await proxy.close()
        for w in ws:
            w.stop()


async def test_local_owners_keep_the_newest():
    o = LocalOwners(max_entries=2)
    for i in range(3):
        await o.put(f"r{i}", f"http://w{i}")
    await o.put("r1", "http://w9")          # re-learned: now the newest
    await o.put("r3", "http://w3")
    assert [await o.get(k) for k in ("r0", "r1", "r2", "r3")] == [None, "http://w9", None, "http://w3"]


async def test_redis_owners_share_and_expire(redis_server):
    link = RedisLink(redis_server.url)
    a, b = RedisOwners(link, ttl_s=3600), RedisOwners(RedisLink(redis_server.url), ttl_s=3600, owns_link=True)
    try:
        await a.put("rec_shared", "http://w1:22400")
        assert await b.get("rec_shared") == "http://w1:22400"   # another gateway process sees it
        assert 3500 < await link.client.ttl("omniserve:rec:rec_shared") <= 3600
        assert await b.get("rec_none") is None
        redis_server.kill()                                        # Redis gone: unknown, never an exception
        assert await b.get("rec_shared") is None and not b.link.up
        await a.put("rec_later", "http://w2:22400")
    finally:
        await link.close()
        await b.close()


# ------------------------------------------------------------------------------- cleanup
def test_cleanup_by_age_and_size(tmp_path):
    store = RecordingStore(tmp_path / "sessions", max_upload_bytes=1000, max_comment_bytes=1000,
                           max_diagnostics_bytes=1000)
    now = time.time()
    for i, (age_days, size) in enumerate([(20, 10), (5, 600), (2, 600), (1, 100)]):
        d = tmp_path / "sessions" / f"s{i}"
        d.mkdir(parents=True)
        (d / "a.bin").write_bytes(b"x" * size)
        os.utime(d, (now - age_days * 86400, now - age_days * 86400))
    old = tmp_path / "diagnostics" / "k_old"
    old.mkdir(parents=True)
    (old / "client_diagnostics.jsonl").write_text("{}\n")
    os.utime(old, (now - 30 * 86400, now - 30 * 86400))
    removed = cleanup(store, retention_s=14 * 86400, cap_bytes=1000, now=now)
    left = sorted(p.name for p in (tmp_path / "sessions").iterdir())
    assert removed == 3 and left == ["s2", "s3"]   # s0 and k_old too old; s1 the oldest over the cap
    assert store.budget.used() == 700
