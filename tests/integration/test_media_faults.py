"""Hostile media against real processes on loopback: header bombs sent to the gateway's voice
upload and to a worker's chat, and playlists that try to make ffmpeg read a local file.

Memory is read from /proc (VmRSS through psutil, VmHWM for the peak) of the server process;
"never opened" is proved with inotify (IN_OPEN | IN_ACCESS) on the sentinel file."""
from __future__ import annotations

import base64
import json
import shutil
import stat
import subprocess
import time
from pathlib import Path

import httpx
import psutil
import pytest

from omniserve import ffbox
from omniserve.engine.api import EngineInputError
from omniserve.engine.backends.embedded.media import split_video
from tests.support.gateway_procs import GatewayProc, start_gateway
from tests.unit.test_mediaprobe import bmp_bomb, png_bomb, tiff_bomb, wav, webp_bomb

from .conftest import WorkerHandle, connect, recv_until, wait_idle

MB = 1024 * 1024
needs_ffmpeg = pytest.mark.skipif(not ffbox.available("ffmpeg", "ffprobe"), reason="ffmpeg is not installed")


def peak_and_rss(pid: int) -> tuple[int, int]:
    """(VmHWM, VmRSS) of a process, in bytes."""
    hwm = next(int(line.split()[1]) * 1024 for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmHWM:"))
    return hwm, psutil.Process(pid).memory_info().rss


class Watch:
    """inotify on one file: IN_OPEN | IN_ACCESS events since the last ``events()``."""

    def __init__(self, path: Path) -> None:
        from inotify_simple import INotify, flags

        self.ino = INotify()
        self.ino.add_watch(str(path), flags.OPEN | flags.ACCESS)

    def events(self, wait_ms: int = 300) -> list:
        return self.ino.read(timeout=wait_ms)

    def close(self) -> None:
        self.ino.close()


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small MPEG-TS with picture and sound: what a playlist would make ffmpeg read."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    path = tmp_path_factory.mktemp("secret") / "sentinel_secret.ts"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=d=2:s=160x120", "-f", "lavfi", "-i",
                    "sine=d=2", "-c:v", "mpeg2video", "-c:a", "mp2", "-f", "mpegts", str(path)], check=True, timeout=60)
    return path


def playlists(target: Path) -> dict[str, bytes]:
    hls = f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:2,\nfile://{target}\n#EXT-X-ENDLIST\n".encode()
    return {
        "hls": hls,
        "hls, relative": hls.replace(f"file://{target}".encode(), str(target).encode()),
        "concat": f"ffconcat version 1.0\nfile '{target}'\n".encode(),
        "hls behind an ftyp box": b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + hls,
        "hls behind an EBML id": b"\x1a\x45\xdf\xa3" + hls,
        "hls behind OggS": b"OggS\x00\x02" + b"\x00" * 20 + hls,
    }


def clean_error(text: str, target: Path) -> bool:
    """No path, file name, or ffmpeg wording in a client-facing error."""
    low = text.lower()
    return (str(target.parent) not in text and target.name not in text and "/" not in text
            and not any(w in low for w in ("ffmpeg", "ffprobe", "file:/", "file:in", "invalid data", "moov", "in.bin", "tmp")))


# ------------------------------------------------------------------------------ engine + ffmpeg (in process)
@needs_ffmpeg
def test_playlists_never_make_ffmpeg_open_a_local_file(sentinel: Path):
    watch = Watch(sentinel)
    try:
        for name, data in playlists(sentinel).items():
            with pytest.raises(EngineInputError) as e:
                split_video(data)
            assert clean_error(str(e.value), sentinel), (name, str(e.value))
            assert watch.events() == [], f"{name}: the sentinel was opened"
        sentinel.read_bytes()                              # the watch does see an open
        assert watch.events(2000), "inotify saw nothing: the check above proves nothing"
    finally:
        watch.close()


def _encode(tmp: Path, name: str, *args: str) -> bytes:
    subprocess.run(["ffmpeg", "-v", "error", *args, str(tmp / name)], check=True, timeout=120)
    return (tmp / name).read_bytes()


@needs_ffmpeg
def test_valid_videos_still_split_and_oversized_frames_are_probed_first(tmp_path: Path):
    src = ["-f", "lavfi", "-i", "testsrc=d=2:s=160x120", "-f", "lavfi", "-i", "sine=d=2", "-shortest"]
    for name, codecs in [("a.mp4", ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac"]),
                         ("a.webm", ["-c:v", "libvpx", "-c:a", "libopus"]),
                         ("a.ogv", ["-c:v", "libtheora", "-c:a", "libvorbis"])]:
        parts = split_video(_encode(tmp_path, name, *src, *codecs), max_frames=4)
        assert len(parts.frames) == 4 and parts.audio is not None and parts.audio.size > 16000, name
        assert all(jpeg[:3] == b"\xff\xd8\xff" for _, jpeg in parts.frames)
    big = _encode(tmp_path, "big.mp4", "-f", "lavfi", "-i", "color=c=red:s=5000x4000:d=1:r=1",
                  "-c:v", "libx264", "-pix_fmt", "yuv420p")
    with pytest.raises(EngineInputError, match="5000x4000"):
        split_video(big)


@needs_ffmpeg
def test_box_is_private_bounded_and_killed_at_its_deadline(tmp_path: Path):
    clip = tmp_path / "long.webm"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=d=40", "-c:a", "libopus", str(clip)],
                   check=True, timeout=60)
    data = clip.read_bytes()
    with ffbox.Box(data, "webm") as box:
        assert stat.S_IMODE(box.folder.stat().st_mode) == 0o700
        assert stat.S_IMODE((box.folder / ffbox.INPUT).stat().st_mode) == 0o600
        folder = box.folder
        pcm = box.audio(rate=16000, max_seconds=1.0, timeout_s=30)
        assert 0 < pcm.size <= 16000                      # -t and the output cap
        with pytest.raises(ffbox.ToolError, match="over its cap"):
            box.run("ffmpeg", [*box.input_args(), "-f", "f32le", "pipe:1"], timeout_s=30, max_output=4096)
        t = time.monotonic()
        with pytest.raises(ffbox.ToolError, match="longer than"):
            box.run("ffmpeg", ["-re", *box.input_args(), "-f", "null", "-"], timeout_s=0.5, max_output=MB)
        assert time.monotonic() - t < 5
    assert not folder.exists()


# ------------------------------------------------------------------------------ gateway voice upload
@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> GatewayProc:
    g = start_gateway(tmp_path_factory.mktemp("gw"), [])
    yield g
    g.stop()


def upload(g: GatewayProc, data: bytes, name: str = "probe") -> httpx.Response:
    return httpx.post(f"{g.url}/api/assets/ref_audio", params={"name": name}, content=data, headers=g.admin,
                      timeout=60, trust_env=False)


@pytest.mark.parametrize("data, reason", [
    (wav(1, seconds=16000), "1 Hz"),                      # 32 KB "at 1 Hz": 16000 s, 2 GB once resampled
    (wav(384000, seconds=0.05), "384000 Hz"),
    (wav(16000, channels=6, seconds=0.5), "channels"),
    (wav(16000, seconds=31), "too long"),
])
def test_voice_upload_header_bombs_are_refused_quickly(gateway: GatewayProc, data: bytes, reason: str):
    peak0, rss0 = peak_and_rss(gateway.proc.pid)
    t = time.monotonic()
    r = upload(gateway, data)
    elapsed = time.monotonic() - t
    peak1, rss1 = peak_and_rss(gateway.proc.pid)
    assert r.status_code == 400 and reason in r.json()["detail"], r.text
    assert elapsed < 5, elapsed
    assert peak1 - max(peak0, rss0) < 100 * MB and rss1 - rss0 < 100 * MB, (peak0, rss0, peak1, rss1)


@needs_ffmpeg
def test_voice_upload_playlist_is_refused_without_opening_the_file(gateway: GatewayProc, sentinel: Path):
    watch = Watch(sentinel)
    try:
        for name, data in playlists(sentinel).items():
            r = upload(gateway, data)
            assert r.status_code == 400, (name, r.text)
            assert clean_error(r.json()["detail"], sentinel), (name, r.text)
            assert watch.events() == [], f"{name}: the gateway's decoder opened the sentinel"
    finally:
        watch.close()


def test_voice_upload_still_accepts_real_audio(gateway: GatewayProc):
    r = upload(gateway, wav(44100, channels=2, seconds=1.0), name="real voice")
    assert r.status_code == 201, r.text
    assert abs(r.json()["duration_s"] - 1.0) < 0.05


# ------------------------------------------------------------------------------ worker chat
def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def chat(worker: WorkerHandle, content: list | str) -> list[dict]:
    ws = await connect(worker.ws + "/ws/chat")
    await ws.send(json.dumps({"messages": [{"role": "user", "content": content}],
                              "generation": {"max_new_tokens": 16, "temperature": 0.0}}))
    msgs = await recv_until(ws, {"done", "error"}, 180)
    await ws.close()
    await wait_idle(worker, 30)      # the worker frees itself just after its last frame
    return msgs


IMAGE_BOMBS = {"png 16384x16384": png_bomb(), "webp VP8": webp_bomb(b"VP8 "), "webp VP8L": webp_bomb(b"VP8L"),
               "webp VP8X": webp_bomb(b"VP8X"), "bmp 30000x30000": bmp_bomb(), "tiff 100000x100000": tiff_bomb()}


async def test_worker_refuses_image_bombs_then_serves(idle: WorkerHandle):
    pid = idle.proc.pid if idle.proc is not None else None
    before = peak_and_rss(pid) if pid else None
    for name, bomb in IMAGE_BOMBS.items():
        msgs = await chat(idle, [{"type": "image", "data": b64(bomb)}, {"type": "text", "text": "What is this?"}])
        assert msgs[-1]["type"] == "error", (name, msgs[-1])
        assert "/" not in msgs[-1]["error"], msgs[-1]
    if before is not None:
        peak, rss = peak_and_rss(pid)
        assert peak - max(before) < 100 * MB and rss - before[1] < 100 * MB, (before, peak, rss)
    msgs = await chat(idle, "Say hello.")
    assert msgs[-1]["type"] == "done" and msgs[-1]["text"].strip(), msgs[-1]


@needs_ffmpeg
async def test_worker_refuses_playlist_video_without_opening_the_file(idle: WorkerHandle, sentinel: Path):
    watch = Watch(sentinel)
    try:
        for name, data in playlists(sentinel).items():
            msgs = await chat(idle, [{"type": "video", "data": b64(data)}, {"type": "text", "text": "Describe it."}])
            assert msgs[-1]["type"] == "error", (name, msgs[-1])
            assert clean_error(msgs[-1]["error"], sentinel), (name, msgs[-1])
            assert watch.events() == [], f"{name}: the worker opened the sentinel"
    finally:
        watch.close()
    msgs = await chat(idle, "Say hello.")
    assert msgs[-1]["type"] == "done", msgs[-1]
