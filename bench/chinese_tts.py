"""Chinese speech bench: which shipped voice speaks Mandarin that a listener understands.

    .venv/bin/python bench/chinese_tts.py [--options kokoro:jf_alpha,espeak-cli] [--sentences 10]

Each option speaks 10 short Chinese sentences of the kind an assistant answers with; Whisper base
(``language="zh"``) hears each back and the character error rate (CER) is taken against the text.
Printed per option: CER (mean over the sentences, and how many sentences had CER ≤ 20 %), and the
synthesis real-time factor (compute seconds / audio seconds, p50) on this machine.

Options:

- ``kokoro:<style>``: Kokoro-82M v1.0 fed Mandarin phonemes from pypinyin, written in the notation
  Kokoro learned Mandarin in (misaki zh: IPA, ligature affricates, tone arrows) — the product's path
  (``KokoroTTS.phonemize_chinese``, ``components/mandarin.py``). One row per Japanese voice style.
- ``kokoro-notone:<style>``: the same without tone marks, to show what the tones are worth.
- ``espeak-cli``: the Debian ``espeak-ng`` program (1.51), ``-v cmn``: espeak-ng's own formant voice.

CER normalization: punctuation and spaces dropped; Whisper's traditional characters mapped to
simplified (a small table covering these sentences and common words); Arabic numbers written as
Chinese numerals (``12`` → 十二, ``14亿`` → 十四亿); ``+`` ``=`` as 加 等于.
"""
from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from omniserve.audio import OUT_RATE, resample  # noqa: E402
from tests.conftest import character_error_rate as cer  # noqa: E402

SENTENCES = [
    "二加三等于五。",
    "北京是中国的首都。",
    "一年有十二个月。",
    "蜘蛛有八条腿。",
    "一个星期有七天。",
    "水在一百度的时候会沸腾。",
    "太阳从东方升起。",
    "今天天气很好，我们去公园散步吧。",
    "我很高兴为你提供帮助。",
    "中国的人口大约有十四亿。",
]

def _espeak_cli(text: str, wpm: int = 175) -> np.ndarray:
    import io

    import soundfile as sf

    wav = subprocess.run(["espeak-ng", "-v", "cmn", "-s", str(wpm), "--stdout", text],
                         capture_output=True, check=True, timeout=30).stdout
    pcm, sr = sf.read(io.BytesIO(wav), dtype="float32", always_2d=True)
    return resample(pcm.mean(axis=1), sr, OUT_RATE)


def make_option(name: str, kokoro_cache: dict):
    """Option name → text → 24 kHz float32."""
    from omniserve.engine.backends.embedded.components import tts

    if name.startswith(("kokoro:", "kokoro-notone:")):
        if "k" not in kokoro_cache:
            kokoro_cache["k"] = tts.KokoroTTS(threads=2)
        k = kokoro_cache["k"]
        style = name.split(":", 1)[1]
        if name.startswith("kokoro-notone:"):
            st = k._style(style)

            def speak(text: str) -> np.ndarray:
                ph = re.sub("[→↗↓↘]", "", k.phonemize_chinese(tts.normalize_for_speech(text)))
                return k._infer(ph, st, 1.0)
            return speak
        return lambda text: k.synthesize(text, voice=f"kokoro:{style}")
    if name == "espeak-cli":
        if shutil.which("espeak-ng") is None:
            return None
        return _espeak_cli
    raise SystemExit(f"unknown option {name!r}")


DEFAULT_OPTIONS = ("kokoro:jf_alpha,kokoro:jf_gongitsune,kokoro:jf_nezumi,kokoro:jf_tebukuro,kokoro:jm_kumo,"
                   "kokoro-notone:jf_alpha,espeak-cli")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--options", default=DEFAULT_OPTIONS)
    ap.add_argument("--sentences", type=int, default=len(SENTENCES))
    ap.add_argument("--show", action="store_true", help="print what Whisper heard")
    args = ap.parse_args()

    from omniserve.engine.backends.embedded.components.asr import WhisperASR

    asr = WhisperASR("base", threads=2)
    sentences = SENTENCES[: args.sentences]
    cache: dict = {}
    rows = []
    for name in args.options.split(","):
        speak = make_option(name, cache)
        if speak is None:
            print(f"{name}: not available here")
            continue
        speak(sentences[0])        # warm-up
        cers, rtfs = [], []
        for s in sentences:
            t0 = time.perf_counter()
            audio = speak(s)
            dt = time.perf_counter() - t0
            rtfs.append(dt / max(audio.size / OUT_RATE, 1e-3))
            heard = asr.transcribe(resample(audio, OUT_RATE, 16000), language="zh")
            cers.append(min(cer(s, heard), 1.0))   # a hallucination loop counts as all wrong, not 30×
            if args.show:
                print(f"  {name:24s} {cers[-1]:5.2f}  {s}  →  {heard}")
        rows.append((name, statistics.mean(cers), sum(c <= 0.2 for c in cers), statistics.median(rtfs)))
        print(f"{name:24s} CER {rows[-1][1]:6.1%}  ok {rows[-1][2]}/{len(sentences)}  RTF {rows[-1][3]:.2f}",
              flush=True)

    print()
    print("| Option | CER (mean) | sentences with CER ≤ 20 % | synthesis RTF (p50) |")
    print("| --- | --- | --- | --- |")
    for name, c, ok, rtf in rows:
        print(f"| {name} | {c:.1%} | {ok}/{len(sentences)} | {rtf:.2f} |")


if __name__ == "__main__":
    main()
