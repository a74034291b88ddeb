"""Right-answers bench: spoken questions in half-duplex on the real embedded engine, per language
setting, in one run.

    .venv/bin/python bench/answers.py [--turns 20] [--skip en,zh]

- English: the 20 questions of ``bench/turns.py`` in its 6 voices (espeak-ng en-us / en-gb, male
  and female, two rates; Piper; Kokoro), heard by Whisper tiny.en (``language`` "en") and by
  Whisper base choosing between English and Chinese per turn ("auto", the default): right
  answers (keyword-checked), the word error of what was heard, per voice too, and end of speech →
  first audio.
- Chinese: 10 spoken questions (speech made here by our own TTS), with the Chinese preset's
  system prompt (the session hears "auto"), against the same questions asked as before this
  change (``language`` "en"): right answers, the character error of what was heard, and the
  character error of the spoken reply heard back by Whisper base.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from omniserve.audio import OUT_RATE, resample  # noqa: E402
from omniserve.engine import load_processor  # noqa: E402
from bench.turns import Voices, half_duplex, pct  # noqa: E402
from tests.conftest import character_error_rate, word_error_rate  # noqa: E402

ZH_QUESTIONS = [("二加三等于几？", ["五", "5"]), ("一个星期有几天？", ["七", "7"]), ("中国的首都是哪里？", ["北京"]),
                ("一年有几个月？", ["十二", "12"]), ("一只猫有几条腿？", ["四", "4"]), ("天空是什么颜色的？", ["蓝"]),
                ("十减四等于几？", ["六", "6"]), ("太阳从哪边升起？", ["东"]), ("一天有多少个小时？", ["二十四", "24"]),
                ("熊猫最喜欢吃什么？", ["竹"])]
ZH_PROMPT = next(p["system_prompt"] for p in yaml.safe_load((REPO / "omniserve/presets/half_duplex.yaml").read_text())
                 ["presets"] if p["id"] == "chinese_call")


def english(proc, voices: Voices, turns: int) -> dict:
    out = {}
    for lang in ("en", "auto"):
        r = half_duplex(proc, voices, turns, "silence", language=lang)
        per_voice: dict[str, list[float]] = {}
        for k, (q, h) in enumerate(r["heard"]):
            per_voice.setdefault(voices.names[k % len(voices.names)], []).append(word_error_rate(q, h))
        out[lang] = r | {"per_voice": {v: statistics.mean(e) for v, e in per_voice.items()}}
    return out


def chinese(proc, voices: Voices) -> dict:
    speaker = proc.backend.cascade.parts.speaker
    asr = proc.backend.cascade.parts.asr

    def say(_k: int, text: str) -> np.ndarray:
        return resample(np.asarray(speaker.synthesize(text, proc.voice()), np.float32), OUT_RATE, 16000)

    out = {}
    for name, lang, prompt in (("before", "en", "You are a friendly voice assistant."), ("now", "", ZH_PROMPT)):
        r = half_duplex(proc, voices, len(ZH_QUESTIONS), "silence", language=lang, prompt=prompt,
                        questions=ZH_QUESTIONS, say=say)
        back = [asr.transcribe(resample(a, OUT_RATE, 16000), language="zh") if a.size else "" for a in r["audio"]]
        out[name] = r | {"back": back,
                         "heard_cer": statistics.mean(character_error_rate(q, h) for q, h in r["heard"]),
                         "reply_cer": statistics.mean(character_error_rate(s, b) if s.strip() else 1.0
                                                      for s, b in zip(r["said"], back))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--turns", type=int, default=20, help="English spoken questions per setting (default 20)")
    ap.add_argument("--skip", default="", help="comma-separated: en, zh")
    a = ap.parse_args()
    skip = set(filter(None, a.skip.split(",")))
    proc = load_processor()
    voices = Voices(proc)
    load = subprocess.run(["cat", "/proc/loadavg"], capture_output=True, text=True).stdout.split()[:3]
    if "en" not in skip:
        en = english(proc, voices, a.turns)
        print(f"\nEnglish, half-duplex, {a.turns} spoken questions in {len(voices.names)} voices, load {' '.join(load)}\n")
        print(f"{'figure':<50}{'en: tiny.en':>24}{'auto: base (default)':>24}")

        def row(name: str, f) -> None:
            print(f"{name:<50}{f(en['en']):>24}{f(en['auto']):>24}")

        row("end of speech → first audio p50 / p95", lambda r: f"{pct(r['lat'], 50):.0f} / {pct(r['lat'], 95):.0f} ms")
        row("right answers (keyword-checked)", lambda r: f"{sum(r['ok'])}/{len(r['ok'])}")
        row("ASR word error of the questions", lambda r: f"{100 * statistics.mean(word_error_rate(q, h) for q, h in r['heard']):.1f} %")
        for v in voices.names:
            row(f"  … {v}", lambda r, v=v: f"{100 * r['per_voice'][v]:.0f} %")
        for lang in ("en", "auto"):
            print(f"\nwrong answers ({lang}): heard → said")
            for (q, h), s, ok in zip(en[lang]["heard"], en[lang]["said"], en[lang]["ok"]):
                if not ok:
                    print(f"  {q!r}: {h!r} → {s.strip()[:80]!r}")
    if "zh" not in skip:
        zh = chinese(proc, voices)
        print(f"\nChinese, half-duplex, {len(ZH_QUESTIONS)} spoken questions (our TTS)\n")
        print(f"{'figure':<50}{'before (en)':>16}{'now (preset)':>16}")
        for name, f in (("right answers", lambda r: f"{sum(r['ok'])}/{len(r['ok'])}"),
                        ("ASR character error of the questions", lambda r: f"{100 * r['heard_cer']:.0f} %"),
                        ("spoken reply heard back: character error", lambda r: f"{100 * r['reply_cer']:.0f} %"),
                        ("end of speech → first audio p50", lambda r: f"{pct(r['lat'], 50):.0f} ms")):
            print(f"{name:<50}{f(zh['before']):>16}{f(zh['now']):>16}")
        print("\nChinese turns (now): heard → said → heard back")
        for (q, h), s, b in zip(zh["now"]["heard"], zh["now"]["said"], zh["now"]["back"]):
            print(f"  {q} → {h} → {s.strip()[:40]} → {b[:40]}")


if __name__ == "__main__":
    main()
