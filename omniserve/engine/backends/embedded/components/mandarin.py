"""Chinese text → Kokoro phonemes, in the notation Kokoro v1.0 learned Mandarin in.

Kokoro v1.0 was trained on misaki's zh G2P: pinyin written as IPA, the affricates as ligatures
(ʦ ʨ ꭧ), the tone as an arrow after the nucleus (→ ↗ ↓ ↘ for tones 1–4, the neutral tone
unmarked), the syllables of a word run together and words separated by spaces.

pypinyin gives the pinyin (its phrase dictionary picks the reading of polyphones, and its phrase
segmentation gives the words); the tables below write each syllable in that notation, after tone
sandhi (3-3 → 2-3, 一 and 不) across the clause. Digits are read as Chinese numbers; Latin words
inside Chinese text go to a caller-given English phonemizer.
"""
from __future__ import annotations

import re
import unicodedata
from typing import Callable, Optional

from pypinyin import Style, lazy_pinyin
from pypinyin.contrib.tone_convert import to_finals_tone3, to_initials
from pypinyin.seg.mmseg import seg as _phrases

from .text import HAN

_TONES = {"1": "→", "2": "↗", "3": "↓", "4": "↘", "5": ""}
_INITIALS = {
    "b": "p", "p": "pʰ", "m": "m", "f": "f", "d": "t", "t": "tʰ", "n": "n", "l": "l", "g": "k", "k": "kʰ",
    "h": "x", "j": "ʨ", "q": "ʨʰ", "x": "ɕ", "zh": "ꭧ", "ch": "ꭧʰ", "sh": "ʂ", "r": "ɻ", "z": "ʦ", "c": "ʦʰ",
    "s": "s",
}
# Standard pinyin finals (y/w spellings and ü already resolved by pypinyin) → IPA, "T" where the tone goes.
_FINALS = {
    "a": "aT", "ai": "aiT", "an": "aTn", "ang": "aTŋ", "ao": "auT", "e": "ɤT", "ei": "eiT", "en": "əTn",
    "eng": "əTŋ", "er": "ɚT", "o": "woT", "ou": "ouT", "ong": "ʊTŋ",
    "i": "iT", "ia": "jaT", "ian": "jɛTn", "iang": "jaTŋ", "iao": "jauT", "ie": "jeT", "in": "iTn", "ing": "iTŋ",
    "iou": "jouT", "iong": "jʊTŋ", "io": "jɔT",
    "u": "uT", "ua": "waT", "uai": "waiT", "uan": "waTn", "uang": "waTŋ", "uei": "weiT", "uen": "wəTn",
    "ueng": "wəTŋ", "uo": "woT",
    "v": "yT", "ve": "ɥeT", "van": "ɥɛTn", "vn": "yTn", "ê": "ɛT",
}
_APICAL = {"zh", "ch", "sh", "r", "z", "c", "s"}        # zhi chi shi ri zi ci si: the vowel is ɨ
_SYLLABIC = {"m": "mT", "n": "nT", "ng": "ŋT", "hm": "xmT", "hng": "xŋT"}   # 呣 嗯 哼
_INTERJECTIONS = {"o": "ɔT"}                          # 哦 (bo po mo fo are "wo")

_PUNCT = {"，": ",", "、": ",", "。": ".", "．": ".", "！": "!", "？": "?", "；": ";", "：": ":", "…": "…",
          "—": "—", "～": ",", "·": " "}
_PUNCT_RUN = re.compile(r"([,.!?;:…—]+)")
_LATIN_RUN = re.compile(r"[A-Za-z][A-Za-z'\-]*(?:\s+[A-Za-z][A-Za-z'\-]*)*")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_DIGITS = "零一二三四五六七八九"
_IN_NUMBER = set(_DIGITS + "十第")
# 2 before these reads 两 (两个, 两点); elsewhere 二
_LIANG_BEFORE = set("个只位件条张次种本块头台辆双对岁天周年小分秒点千万亿")


def syllable(py: str) -> str:
    """One pinyin syllable with a tone number ("zhong1", "lv4", "de5") → Kokoro phonemes."""
    tone = _TONES.get(py[-1:], "")
    ini = to_initials(py, strict=True)
    fin = re.sub(r"\d$", "", to_finals_tone3(py, strict=True, neutral_tone_with_five=True))
    body = re.sub(r"\d$", "", py)
    if not fin:                                         # a syllabic consonant
        return _SYLLABIC.get(body, "").replace("T", tone)
    if ini in _APICAL and fin == "i":
        ipa = "ɨT"
    elif not ini and fin in _INTERJECTIONS and body == fin:
        ipa = _INTERJECTIONS[fin]
    else:
        ipa = _FINALS.get(fin, "")
    return _INITIALS.get(ini, "") + ipa.replace("T", tone) if ipa else ""


def _below_10k(n: int) -> str:
    out, zero = "", False
    for unit, place in (("千", 1000), ("百", 100), ("十", 10), ("", 1)):
        d = n // place % 10
        if d:
            out += ("零" if zero else "") + _DIGITS[d] + unit
            zero = False
        elif out:
            zero = True
    return out


def number_hanzi(digits: str, after: str = "") -> str:
    """Arabic number (``12``, ``3.5``, ``2024`` before 年) → Chinese numerals as read aloud."""
    whole, _, frac = digits.partition(".")
    spell = len(whole) > 16 or (len(whole) > 1 and whole[0] == "0") or (len(whole) == 4 and after == "年")
    if spell:
        text = "".join(_DIGITS[int(d)] for d in whole)
    elif whole == "2" and not frac and after in _LIANG_BEFORE:
        text = "两"
    else:
        n = int(whole)
        groups = []
        while n:
            groups.append(n % 10000)
            n //= 10000
        text, gap = "", False
        for i in reversed(range(len(groups))):
            g = groups[i]
            if not g:
                gap = bool(text)
                continue
            if text and (gap or g < 1000):
                text += "零"
            text += _below_10k(g) + ("", "万", "亿", "万亿")[i]
            gap = False
        text = text[1:] if text.startswith("一十") else text or "零"      # 十二, not 一十二
    if frac:
        text += "点" + "".join(_DIGITS[int(d)] for d in frac)
    return text


def _read_numbers(text: str) -> str:
    """Digits → Chinese numerals, each number between "|" so that it stays one word."""
    text = _THOUSANDS.sub("", text)
    return _NUMBER.sub(lambda m: "|" + number_hanzi(m.group(0), text[m.end():m.end() + 1]) + "|", text)


def _sandhi(syls: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Tone sandhi over a clause of (character, pinyin): 3-3 → 2-3, 不 before tone 4 → bu2, 一 → yi2
    before tone 4 and yi4 before tones 1–3 (not in numbers: 十一, 一一零, 第一, nor at the end)."""
    tones = [p[-1] for _, p in syls]
    out = []
    for i, (ch, py) in enumerate(syls):
        nxt = tones[i + 1] if i + 1 < len(syls) else ""
        after = syls[i + 1][0] if i + 1 < len(syls) else ""
        before = syls[i - 1][0] if i else ""
        if tones[i] == "3" and nxt == "3":
            py = py[:-1] + "2"
        elif ch == "不" and py == "bu4" and nxt == "4":
            py = "bu2"
        elif ch == "一" and py == "yi1" and nxt and nxt in "1234" and not ({after, before} & _IN_NUMBER):
            py = "yi2" if nxt == "4" else "yi4"
        out.append((ch, py))
    return out


def _words(text: str) -> list[str]:
    """Chinese text without Latin letters or punctuation → Kokoro words (syllables run together)."""
    words: list[list[tuple[str, str]]] = []
    for i, part in enumerate(text.split("|")):
        for word in [part] if i % 2 else _phrases.cut(part):     # odd parts: one number each
            chars = [c for c in word if HAN.match(c)]
            pys = lazy_pinyin(word, style=Style.TONE3, neutral_tone_with_five=True, errors="ignore")
            if pys:
                words.append(list(zip(chars, pys)) if len(chars) == len(pys) else [("", p) for p in pys])
    flat = iter(_sandhi([s for w in words for s in w]))          # across words: 很好 → hén hǎo
    words = [[next(flat) for _ in w] for w in words]
    out = ["".join(syllable(py) for _, py in w) for w in words]
    return [w for w in out if w]


def mandarin_phonemes(text: str, english: Optional[Callable[[str], str]] = None) -> str:
    """Chinese text → Kokoro phoneme string. Latin words go to ``english`` (text → Kokoro phonemes)
    when given, else are dropped; digits are read in Chinese; punctuation is kept for prosody."""
    t = "".join(_PUNCT.get(ch, ch) for ch in _read_numbers(unicodedata.normalize("NFKC", text)))
    pieces: list[str] = []
    pos = 0
    for a, b in [*((m.start(), m.end()) for m in _LATIN_RUN.finditer(t)), (len(t), len(t))]:
        for part in _PUNCT_RUN.split(t[pos:a]):
            if not part.strip():
                continue
            if _PUNCT_RUN.fullmatch(part):
                if pieces and pieces[-1][-1:] not in ",.!?;:…—":
                    pieces[-1] += part[0]
                continue
            words = _words(part)
            if words:
                pieces.append(" ".join(words))
        if a < b and english is not None:
            ph = english(t[a:b])
            if ph:
                pieces.append(ph)
        pos = b
    return " ".join(pieces).strip()
