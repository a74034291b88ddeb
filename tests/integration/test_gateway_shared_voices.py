"""Uploaded voices shared through Redis (``gateway.redis_url``, ``state.shared_voices``): two real
gateway processes with separate data folders on one real redis-server. A voice uploaded through
one is listed and played through the other, deleted through either, capped for both together,
and its audio comes back after Redis restarts empty."""
from __future__ import annotations

import io
import secrets
import time
from typing import Callable

import httpx
import numpy as np
import pytest
import soundfile as sf

from omniserve.gateway.state.link import key
from tests.support.gateway_procs import GatewayProc, start_gateway

ADMIN = "admin-" + secrets.token_hex(12)
ADMIN_H = {"Authorization": f"Bearer {ADMIN}"}
MAX_VOICES = 3
PROPAGATION_S = 1.0          # a change on one gateway holds on the others within this


@pytest.fixture(scope="module")
def gateways(redis_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gwvoices")
    env = {"OMNISERVE_GATEWAY__ADMIN_TOKEN": ADMIN, "OMNISERVE_GATEWAY__EDGE__MAX_VOICES": str(MAX_VOICES)}
    a = start_gateway(tmp, [], 0, env, data_dir=tmp / "a", redis_url=redis_server.url)
    try:
        b = start_gateway(tmp, [], 0, env, data_dir=tmp / "b", redis_url=redis_server.url)
    except BaseException:
        a.stop()
        raise
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
    within(PROPAGATION_S, lambda: not spare.exists(), "the uploader's spare removed")
    assert delete(a, ref_id).status_code == 404


def test_the_voice_cap_holds_for_both_gateways_together(clean):
    a, b = clean
    made = [upload(g, f"v{i}").json()["id"] for i, g in enumerate((a, b, a))]
    within(PROPAGATION_S, lambda: set(voices(b)) == set(made), "all listed")
    for g in (a, b):
        r = upload(g, "one too many")
        assert r.status_code == 507 and "full" in r.json()["detail"], r.text
    assert sorted(voices(a)) == sorted(voices(b)) == sorted(made)


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
