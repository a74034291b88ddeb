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


def _speakable(ch: str) -> bool:
    """Letters, digits, marks, spaces and ordinary punctuation; not emoji or pictographs."""
    cat = unicodedata.category(ch)
    if cat[0] in "LNMZ":
        return True
    if cat[0] == "P":
        return True
    return ch in "\n'"


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
    for pat, rep in _SYMBOLS:
        t = pat.sub(rep, t)
    t = _STRAY.sub(" ", t)
    t = "".join(ch if _speakable(ch) else " " for ch in t)
    t = _SPACES.sub(" ", t)
    t = re.sub(r" *\n+ *", "\n", t)
    t = re.sub(r" +([,.!?;:])", r"\1", t)
    return t.strip()


_SENTENCE_END = re.compile(r"([.!?;:…]+[\"')\]]*)(\s+|$)|\n+")
_CLAUSE_END = re.compile(r"(,)(\s+)")


class SentenceSplitter:
    """Cut streamed text into speakable pieces: whole sentences, fragments shorter than
    ``min_chars`` joined to the next; the first piece may end at a comma (once it has
    ``first_clause_chars``) so the first audio starts early.

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
            if m.end() == len(buf) and m.group(0) and not m.group(0)[-1].isspace():
                break   # "3." at the very end may be "3.5" still streaming: wait for what follows
            if len(buf[:m.end()].strip()) >= self.min_chars:
                cut = m.end()
                break
        if cut is None and self._emitted == 0:
            for m in _CLAUSE_END.finditer(buf):
                if len(buf[:m.start()].strip()) >= self.first_clause_chars:
                    cut = m.end()
                    break
        if cut is None and len(buf) > self.max_chars:
            space = buf.rfind(" ", 0, self.max_chars)
            cut = space + 1 if space > 0 else self.max_chars
        if cut is None:
            return None
        piece, self._buf = buf[:cut].strip(), buf[cut:]
        if not piece:
            return None
        self._emitted += 1
        return piece


def split_sentences(text: str, min_chars: int = 12) -> list[str]:
    """All pieces of a finished text (no comma split): for whole-text synthesis."""
    s = SentenceSplitter(min_chars=min_chars, first_clause_chars=10**9)
    return s.push(text) + s.flush()
