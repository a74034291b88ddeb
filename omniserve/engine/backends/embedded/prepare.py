"""Prepare the embedded backend's model files: join split weights, check every file, measure
the TTS voices. ``python -m omniserve.engine.backends.embedded.prepare`` (setup.sh step 7); fast
when everything is already in place. ``--verify`` re-hashes the joined files.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional

from .models import (ModelFileError, cache_dir, centerface_dynamic_path, kokoro_model_path, piper_voice_paths,
                     qwen_gguf_path, silero_onnx_path, smart_turn_onnx_path, smollm2_gguf_path, verify_all,
                     whisper_dir)


def _measure_voices(cache: Optional[str]) -> Path:
    from .components.tts import measure_voices

    measure_voices(cache)
    return cache_dir(cache) / "voices.json"


def prepare(cache: Optional[str] = None, out=sys.stderr) -> None:
    """Join every split model and check that every other file is present."""
    last = {"t": 0.0}

    def progress(name: str, done: int, total: int) -> None:
        now = time.monotonic()
        if now - last["t"] > 0.5 or done == total:
            last["t"] = now
            print(f"\r  joining {name}: {done >> 20}/{total >> 20} MiB", end="\n" if done == total else "", file=out, flush=True)

    steps = [("Qwen2.5-0.5B GGUF", lambda: qwen_gguf_path(cache, progress)),
             ("Whisper base", lambda: whisper_dir("base", cache, progress)),
             ("Whisper tiny.en", lambda: whisper_dir("tiny.en")),
             ("SmolLM2-135M GGUF", smollm2_gguf_path),
             ("Silero VAD", silero_onnx_path),
             ("Smart Turn v3.2", lambda: smart_turn_onnx_path(check=True)),
             ("Piper joe voice", lambda: piper_voice_paths()[0]),
             ("Kokoro-82M", lambda: kokoro_model_path(cache)),
             ("CenterFace", lambda: centerface_dynamic_path(cache)),
             ("TTS voice profiles", lambda: _measure_voices(cache))]
    for label, fn in steps:
        t = time.monotonic()
        path = fn()
        print(f"  ok  {label:18s} {path}  ({time.monotonic() - t:.1f} s)", file=out, flush=True)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m omniserve.engine.backends.embedded.prepare", description=__doc__.splitlines()[0])
    ap.add_argument("--prepare", action="store_true", help="join split model files and check them")
    ap.add_argument("--verify", action="store_true", help="re-hash the joined files")
    ap.add_argument("--cache-dir", default=None)
    args = ap.parse_args(argv)
    try:
        if args.prepare or not args.verify:
            print(f"model cache: {cache_dir(args.cache_dir)}", file=sys.stderr)
            prepare(args.cache_dir)
        if args.verify:
            for name, ok in verify_all(args.cache_dir).items():
                print(f"  {'ok ' if ok else 'BAD'} {name}", file=sys.stderr)
    except ModelFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
