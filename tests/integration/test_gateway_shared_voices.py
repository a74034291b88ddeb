"""Uploaded voices shared through Redis (``gateway.redis_url``, ``state.shared_voices``): two real
gateway processes with separate data folders on one real redis-server. A voice uploaded through
one is listed and played through the other, deleted through either, capped for both together,
and its audio comes back after Redis restarts empty."""
from __future__ import annotations

import concurrent.futures
import io
import secrets
import time
from pathlib import Path
from typing import Callable

import httpx
import numpy as np
import pytest
import soundfile as sf

from omniserve.gateway.state.link import key
from omniserve.gateway.state.shared_voices import SYNC_S
from omniserve.gateway.voice_files import LocalVoices
from tests.support.gateway_procs import GatewayProc, start_gateway_pair
from tests.support.redis_server import RedisServer, running_redis

ADMIN = "admin-" + secrets.token_hex(12)
ADMIN_H = {"Authorization": f"Bearer {ADMIN}"}
MAX_VOICES = 3
PROPAGATION_S = 1.0          # a change on one gateway holds on the others within this


@pytest.fixture(scope="module")
def gateways(redis_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gwvoices")
    env = {"OMNISERVE_GATEWAY__ADMIN_TOKEN": ADMIN, "OMNISERVE_GATEWAY__EDGE__MAX_VOICES": str(MAX_VOICES)}
    a, b = start_gateway_pair(tmp, env, (tmp / "a", tmp / "b"), redis_server.url)
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture
def clean(gateways):
    """Every test starts with no voice stored."""
    a, _ = gateways
    for v in voices(a):
        delete(a, v)
    yield gateways


def wav(seconds: float, hz: float) -> bytes:
    t = np.arange(int(seconds * 16000)) / 16000
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def upload(g: GatewayProc, name: str, hz: float = 220.0) -> httpx.Response:
    return httpx.post(f"{g.url}/api/assets/ref_audio", params={"name": name}, content=wav(1.0, hz),
                      headers=ADMIN_H, timeout=30, trust_env=False)


def voices(g: GatewayProc) -> list[str]:
    r = httpx.get(f"{g.url}/api/assets/ref_audio", timeout=5, trust_env=False)
    assert r.status_code == 200, r.text
    return [v["id"] for v in r.json() if not v.get("builtin")]


def audio(g: GatewayProc, ref_id: str) -> httpx.Response:
    return httpx.get(f"{g.url}/api/assets/ref_audio/{ref_id}/audio", timeout=5, trust_env=False)


def delete(g: GatewayProc, ref_id: str) -> httpx.Response:
    return httpx.delete(f"{g.url}/api/assets/ref_audio/{ref_id}", headers=ADMIN_H, timeout=5, trust_env=False)


def within(s: float, check: Callable[[], bool], what: str) -> float:
    t0 = time.monotonic()
    while not check():
        assert time.monotonic() - t0 < s, f"not within {s} s: {what}"
        time.sleep(0.02)
    return time.monotonic() - t0


def test_a_voice_uploaded_through_one_gateway_plays_and_is_deleted_through_the_other(clean):
    a, b = clean
    r = upload(a, "Shared voice")
    assert r.status_code == 201, r.text
    ref_id = r.json()["id"]
    within(PROPAGATION_S, lambda: ref_id in voices(b), "listed on the other gateway")
    got = audio(b, ref_id)
    assert got.status_code == 200 and got.headers["content-type"] == "audio/wav"
    assert got.content == audio(a, ref_id).content
    pcm, rate = sf.read(io.BytesIO(got.content))
    assert rate == 16000 and abs(len(pcm) / rate - 1.0) < 0.02
    assert not (b.data_dir / "ref_audio" / f"{ref_id}.wav").exists()     # B holds no copy: it came from Redis
    spare = a.data_dir / "ref_audio" / f"{ref_id}.wav"
    assert spare.is_file()                                                # the uploader's spare

    assert delete(b, ref_id).status_code == 200
    within(PROPAGATION_S, lambda: ref_id not in voices(a), "deleted on the first gateway")
    assert audio(a, ref_id).status_code == 404 and audio(b, ref_id).status_code == 404
    within(SYNC_S + 2, lambda: not spare.exists(), "the uploader's spare removed at its next sync")
    assert delete(a, ref_id).status_code == 404


def test_the_voice_cap_holds_for_both_gateways_together(clean):
    a, b = clean
    made = [upload(g, f"v{i}").json()["id"] for i, g in enumerate((a, b))]
    within(PROPAGATION_S, lambda: set(voices(a)) == set(voices(b)) == set(made), "listed on both")
    # one place left, one upload through each gateway at once: each passes its own gateway's early
    # count, so only the shared map's cap can refuse one of them
    def late_body(g: GatewayProc) -> httpx.Response:       # the count is checked before the body is read
        def body():
            time.sleep(0.5)
            yield wav(1.0, 330.0)
        return httpx.post(f"{g.url}/api/assets/ref_audio", params={"name": "last place"}, content=body(),
                          headers=ADMIN_H, timeout=30, trust_env=False)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        got = list(pool.map(late_body, (a, b)))
    assert sorted(r.status_code for r in got) == [201, 507], [r.text for r in got]
    assert "full" in next(r for r in got if r.status_code == 507).json()["detail"]
    within(PROPAGATION_S, lambda: len(voices(a)) == len(voices(b)) == MAX_VOICES, "three on both")
    for g in (a, b):
        r = upload(g, "one too many")
        assert r.status_code == 507 and "full" in r.json()["detail"], r.text
    refused = next(g for g, r in zip((a, b), got) if r.status_code == 507)
    assert len(list((refused.data_dir / "ref_audio").glob("ra_*.json"))) == 1       # no spare of the refused one


def test_audio_comes_back_after_redis_restarts_empty(clean, redis_server):
    a, b = clean
    r = upload(a, "Kept")
    assert r.status_code == 201, r.text
    ref_id = r.json()["id"]
    within(PROPAGATION_S, lambda: ref_id in voices(b), "listed on the other gateway")
    want = audio(a, ref_id).content

    redis_server.kill()
    assert ref_id in voices(b)                                 # the copy answers while Redis is down
    r = upload(b, "while down")
    assert r.status_code == 503 and "try again" in r.json()["detail"], r.text
    redis_server.restart()                                     # empty: no persistence
    with redis_server.client() as rc:
        assert not rc.exists(key("voice", ref_id))
    # the record comes back from the gateways' copies, the audio from A's disk (its put-back loop)
    within(12.0, lambda: audio(b, ref_id).status_code == 200, "B plays it again")
    assert audio(b, ref_id).content == want and ref_id in voices(a) and ref_id in voices(b)


def _pair(redis: RedisServer, tmp: Path, folders: tuple[str, str]) -> tuple[GatewayProc, GatewayProc]:
    return start_gateway_pair(tmp, {"OMNISERVE_GATEWAY__ADMIN_TOKEN": ADMIN}, (tmp / folders[0], tmp / folders[1]),
                              redis.url)


def test_voices_survive_redis_and_every_gateway_restarting(tmp_path):
    """A cold start: Redis restarted empty and both gateways restarted, B first. B's copy seeds the
    map without A's voice; A must put its voice back (record and audio), not take its absence for a
    deletion and drop its spare."""
    with running_redis(tmp_path) as redis:
        a, b = _pair(redis, tmp_path, ("a", "b"))
        try:
            va, vb = upload(a, "from A").json()["id"], upload(b, "from B").json()["id"]
            want = {va: audio(a, va).content, vb: audio(b, vb).content}
        finally:
            a.stop()
            b.stop()
        redis.restart()                                    # empty: no persistence
        b, a = _pair(redis, tmp_path, ("b", "a"))          # B's copy reaches Redis first
        try:
            def whole() -> bool:
                return all(set(voices(g)) == {va, vb} and all(audio(g, v).content == want[v] for v in want)
                           for g in (a, b))
            within(SYNC_S + 3, whole, "both voices listed and played on both gateways")
            assert set(LocalVoices(tmp_path / "a" / "ref_audio").items) == {va}     # A's spare is kept
        finally:
            a.stop()
            b.stop()


def test_two_processes_on_one_data_folder_keep_each_others_voices(tmp_path):
    """``--processes N`` members share one data folder: each voice is its own pair of files, so an
    upload through one never overwrites the other's; a deletion removes both files."""
    with running_redis(tmp_path) as redis:
        a, b = _pair(redis, tmp_path, ("shared", "shared"))
        try:
            va, vb = upload(a, "through A").json()["id"], upload(b, "through B").json()["id"]
            assert set(LocalVoices(tmp_path / "shared" / "ref_audio").items) == {va, vb}
            assert delete(b, va).status_code == 200
            assert set(LocalVoices(tmp_path / "shared" / "ref_audio").items) == {vb}
            assert not list((tmp_path / "shared" / "ref_audio").glob(f"{va}*"))
        finally:
            a.stop()
            b.stop()
