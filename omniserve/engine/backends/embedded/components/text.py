"""Text for the ear: turn LLM output (often markdown) into speakable text, and cut a streaming
reply into pieces a TTS can start on early.

Used by both TTS engines and by ``reply.SpokenReply``, which streams speech while the LLM still
writes.
"""
from __future__ import annotations

import re
import unicodedata

_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")          # [text](url) / ![alt](src) → text
_MD_CODE_FENCE = re.compile(r"```[^\n]*\n?")
_MD_INLINE = re.compile(r"(\*\*|__|\*|_|~~|`)(?=\S)(.+?)(?<=\S)\1")
_MD_HEADING = re.compile(r"^\s{0,3}#{1,6}\s*", re.M)
_MD_BULLET = re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+", re.M)
_MD_QUOTE = re.compile(r"^\s*>\s?", re.M)
_MD_RULE = re.compile(r"^\s*([-*_])\1{2,}\s*$", re.M)
_URL = re.compile(r"https?://\S+")
_STRAY = re.compile(r"[*_`#~|<>\[\]{}^\\]")
_SPACES = re.compile(r"[ \t\u00a0]+")

_SYMBOLS = [
    (re.compile(r"(\d)\s*%"), r"\1 percent"),
    (re.compile(r"\s*&\s*"), " and "),
    (re.compile(r"(\d)\s*°\s*C\b"), r"\1 degrees Celsius"),
    (re.compile(r"(\d)\s*°\s*F\b"), r"\1 degrees Fahrenheit"),
    (re.compile(r"(\d)\s*°"), r"\1 degrees"),
    (re.compile(r"\+"), " plus "),
    (re.compile(r"(?<=\d)\s*=\s*(?=\d)"), " equals "),
    (re.compile(r"@"), " at "),
    (re.compile(r"\$\s*(\d[\d,.]*)"), r"\1 dollars"),
    (re.compile(r"€\s*(\d[\d,.]*)"), r"\1 euros"),
]

# The same for Chinese text (no English words in a Chinese sentence).
_ZH_SYMBOLS = [
    (re.compile(r"(\d+(?:\.\d+)?)\s*[%％]"), r"百分之\1"),
    (re.compile(r"(\d)\s*(?:°\s*C\b|℃)"), r"\1摄氏度"),
    (re.compile(r"(\d)\s*(?:°\s*F\b|℉)"), r"\1华氏度"),
    (re.compile(r"(\d)\s*°"), r"\1度"),
    (re.compile(r"\s*[+＋]\s*"), "加"),
    (re.compile(r"(?<=\d)\s*[=＝]\s*(?=\d)"), "等于"),
    (re.compile(r"(?<=\d)\s*[×xX*]\s*(?=\d)"), "乘"),
    (re.compile(r"(?<=\d)\s*÷\s*(?=\d)"), "除以"),
    (re.compile(r"\s*[&＆]\s*"), "和"),
    (re.compile(r"[$＄]\s*(\d[\d,.]*)"), r"\1美元"),
    (re.compile(r"€\s*(\d[\d,.]*)"), r"\1欧元"),
    (re.compile(r"[¥￥]\s*(\d[\d,.]*)"), r"\1元"),
]
_FULLWIDTH_ALNUM = re.compile(r"[\uff10-\uff19\uff21-\uff3a\uff41-\uff5a]")


def _speakable(ch: str) -> bool:
    """Letters, digits, marks, spaces and ordinary punctuation; not emoji or pictographs."""
    cat = unicodedata.category(ch)
    if cat[0] in "LNMZ":
        return True
    if cat[0] == "P":
        return True
    return ch in "\n'"


# Chinese characters (CJK unified ideographs, extension A, compatibility ideographs): the one
# definition the engine's language decisions share.
HAN_RANGES = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
HAN = re.compile(f"[{HAN_RANGES}]")
_LATIN = re.compile(r"[A-Za-z]")


def is_mainly_chinese(text: str) -> bool:
    """True when Chinese characters carry the text: a Chinese character weighs about three Latin
    letters (one syllable), so "我叫Tom" is Chinese and "I love 北京 in spring" is not."""
    cjk = len(HAN.findall(text))
    return cjk > 0 and 3 * cjk >= len(_LATIN.findall(text))


def normalize_for_speech(text: str) -> str:
    """Markdown, URLs, emojis and unspeakable symbols out; a few symbols spelled out."""
    if not text:
        return ""
    t = _MD_CODE_FENCE.sub("", text)
    t = _MD_LINK.sub(r"\1", t)
    t = _URL.sub("", t)
    t = _MD_RULE.sub("", t)
    t = _MD_HEADING.sub("", t)
    t = _MD_QUOTE.sub("", t)
    t = _MD_BULLET.sub("", t)
    for _ in range(2):   # nested emphasis (**_x_**)
        t = _MD_INLINE.sub(r"\2", t)
    if is_mainly_chinese(t):
        t = _FULLWIDTH_ALNUM.sub(lambda m: chr(ord(m.group(0)) - 0xFEE0), t)
        symbols = _ZH_SYMBOLS
    else:
        symbols = _SYMBOLS
    for pat, rep in symbols:
        t = pat.sub(rep, t)
    t = _STRAY.sub(" ", t)
    t = "".join(ch if _speakable(ch) else " " for ch in t)
    t = _SPACES.sub(" ", t)
    t = re.sub(r" *\n+ *", "\n", t)
    t = re.sub(r" +([,.!?;:])", r"\1", t)
    return t.strip()


_SENTENCE_END = re.compile(r"([.!?;:…]+[\"')\]]*)(\s+|$)|\n+"
                           # Chinese: full-width ends need no space; ASCII ones count before a Chinese character
                           r"|[。！？；：]+[”’」』）\"')\]]*|[.!?;:…]+(?=[" + HAN_RANGES + "])")
_CLAUSE_END = re.compile(r"(,)(\s+)|，|,(?=[" + HAN_RANGES + "])")
_CJK_WEIGHT = 3            # a Chinese character is a syllable: about three Latin letters of speech


def speech_length(text: str) -> int:
    """Length in Latin-letter equivalents: a Chinese character counts ``_CJK_WEIGHT``."""
    return len(text) + (_CJK_WEIGHT - 1) * len(HAN.findall(text))


class SentenceSplitter:
    """Cut streamed text into speakable pieces: whole sentences, fragments shorter than
    ``min_chars`` joined to the next; the first piece may end at a comma (once it has
    ``first_clause_chars``) so the first audio starts early. Lengths are ``speech_length``s (a Chinese
    character counts as three letters); Chinese text is cut at 。！？；： and, for the first piece, ，
    with no space after them.

    ``push(delta)`` returns the pieces completed by ``delta``; ``flush()`` returns the rest.
    """

    def __init__(self, min_chars: int = 12, first_clause_chars: int = 16, max_chars: int = 240) -> None:
        self.min_chars = min_chars
        self.first_clause_chars = first_clause_chars
        self.max_chars = max_chars
        self._buf = ""
        self._emitted = 0

    def push(self, delta: str) -> list[str]:
        self._buf += delta
        out: list[str] = []
        while True:
            piece = self._next_piece()
            if piece is None:
                break
            out.append(piece)
        return out

    def flush(self) -> list[str]:
        rest, self._buf = self._buf.strip(), ""
        if rest:
            self._emitted += 1
            return [rest]
        return []

    def _next_piece(self) -> str | None:
        buf = self._buf
        cut = None
        for m in _SENTENCE_END.finditer(buf):
            if m.end() == len(buf) and m.group(0) and not m.group(0)[-1].isspace() and m.group(1):
                break   # "3." at the very end may be "3.5" still streaming: wait for what follows
            if speech_length(buf[:m.end()].strip()) >= self.min_chars:
                cut = m.end()
                break
        if cut is None and self._emitted == 0:
            for m in _CLAUSE_END.finditer(buf):
                if speech_length(buf[:m.start()].strip()) >= self.first_clause_chars:
                    cut = m.end()
                    break
        if cut is None and speech_length(buf) > self.max_chars:
            limit = self._index_at(buf, self.max_chars)
            space = max(buf.rfind(" ", 0, limit), buf.rfind("，", 0, limit), buf.rfind("、", 0, limit))
            cut = space + 1 if space > 0 else limit
        if cut is None:
            return None
        piece, self._buf = buf[:cut].strip(), buf[cut:]
        if not piece:
            return None
        self._emitted += 1
        return piece

    @staticmethod
    def _index_at(buf: str, length: int) -> int:
        """The index in ``buf`` where its speech length reaches ``length``."""
        if len(buf) == speech_length(buf):
            return length
        n = 0
        for i, ch in enumerate(buf):
            n += _CJK_WEIGHT if HAN.match(ch) else 1
            if n > length:
                return max(i, 1)
        return len(buf)


def split_sentences(text: str, min_chars: int = 12) -> list[str]:
    """All pieces of a finished text (no comma split): for whole-text synthesis."""
    s = SentenceSplitter(min_chars=min_chars, first_clause_chars=10**9)
    return s.push(text) + s.flush()
