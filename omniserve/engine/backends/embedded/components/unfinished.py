"""Does a transcript sound cut off mid-sentence? A cue from the words, beside Smart Turn's from the
sound: "I'd like to go to", "and then we went to the", "我想去" end on a word that needs more.

A turn whose words end so may pause longer before it is answered (the VAD's end-of-turn
judgement, ``vad.VadSegmenter.hold``); the cue can only lengthen a pause, never shorten one.
English: the last word is a function word that cannot end a sentence (articles, prepositions,
conjunctions, auxiliaries, possessives, fillers) or the text ends on a comma or a dash. Chinese:
the last character or word is a particle or connective that introduces more.
"""
from __future__ import annotations

import re

from .text import HAN

# Only words that (almost) never end an utterance: "in", "on", "it", "can", "do" end many ("turn it
# on", "yes I can"), so they are not here.
_EN_OPEN = frozenset("""
a an the my your our their
to of for from with at into onto toward towards upon than via between through during against about
and or but nor because although if unless whereas whether
is am are was were be
i we they he she
um uh er erm
very quite
""".split())
_EN_WORD = re.compile(r"[a-z']+")
# Connectives and prepositions that introduce more ("是", "要", "对", "的" end sentences: not here).
_ZH_OPEN = ("和", "跟", "与", "或者", "把", "被", "从", "向", "往", "比", "让", "想要", "因为", "所以", "但是", "可是",
            "而且", "然后", "还有", "如果", "虽然", "那个", "嗯", "呃", "一个")
_TRAILING = re.compile(r"[\s\"')\]]+$")


def sounds_unfinished(text: str) -> bool:
    """True when ``text`` (a turn's transcript so far) ends where a sentence cannot."""
    t = _TRAILING.sub("", text or "")
    if not t:
        return False
    if t[-1] in ",，、-—–…:：":
        return True
    if t[-1] in "?!？！":
        return False                 # Whisper heard a question or an exclamation: finished
    # Whisper ends most turns with a full stop whatever the speaker did: the words decide
    t = t.rstrip(".。")
    if not t:
        return False
    if HAN.match(t[-1]):
        return t.endswith(_ZH_OPEN)
    words = _EN_WORD.findall(t.lower())
    return bool(words) and words[-1] in _EN_OPEN
