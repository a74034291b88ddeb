"""Chinese speech output: text for the ear, sentence pieces, Mandarin phonemes, voice routing, and one
sentence spoken by Kokoro and heard back by Whisper base."""
from __future__ import annotations

import numpy as np
import pytest

from omniserve.audio import OUT_RATE, resample
from omniserve.engine.api import Voice
from omniserve.engine.backends.embedded.components.base import VoiceInfo
from omniserve.engine.backends.embedded.components.text import (SentenceSplitter, is_mainly_chinese,
                                                                  normalize_for_speech, speech_length,
                                                                  split_sentences)
from omniserve.engine.backends.embedded.voices import VoiceBank


# ------------------------------------------------------------------------------ text
def test_mainly_chinese():
    assert is_mainly_chinese("北京是中国的首都。")
    assert is_mainly_chinese("我叫Tom，今年25岁。")
    assert not is_mainly_chinese("I love 北京 in the spring.")
    assert not is_mainly_chinese("Hello there.")
    assert not is_mainly_chinese("")


def test_normalize_chinese_symbols_and_keeps_english_as_it_was():
    assert normalize_for_speech("**答案**：2+3=5，增长了50%，气温25°C。😀") == "答案：2加3等于5，增长了百分之50，气温25摄氏度。"
    assert normalize_for_speech("价格＄５，Ａ＆Ｂ。") == "价格5美元，A和B。"
    assert normalize_for_speech("The answer is 2 + 3 = 5, 50% & more.") == \
        "The answer is 2 plus 3 equals 5, 50 percent and more."


def _stream(text: str, **kw) -> list[str]:
    s = SentenceSplitter(**kw)
    out = []
    for ch in text:          # one character at a time, as an LLM streams Chinese
        out += s.push(ch)
    return out + s.flush()


def test_splitter_cuts_chinese_without_spaces():
    text = "北京是中国的首都，也是政治和文化中心。它有三千多年的历史！你去过吗？好的。"
    assert _stream(text) == ["北京是中国的首都，", "也是政治和文化中心。", "它有三千多年的历史！", "你去过吗？", "好的。"]
    # a full-width end at the very end of the stream is not held back (unlike "3." that may be "3.5")
    s = SentenceSplitter()
    assert s.push("二加三等于五。") == ["二加三等于五。"]


def test_splitter_first_piece_early_at_a_chinese_comma_only_if_long_enough():
    assert _stream("好的，我来帮你查一下今天的天气。")[0] == "好的，我来帮你查一下今天的天气。"
    assert _stream("今天北京的天气很好，气温二十五度。")[0] == "今天北京的天气很好，"


def test_splitter_cuts_an_overlong_chinese_sentence_at_a_comma():
    text = "，".join(["这是一个很长的句子"] * 12) + "。"
    pieces = _stream(text, max_chars=60)
    assert all(speech_length(p) <= 60 for p in pieces[:-1])
    assert all(p.endswith(("，", "。")) for p in pieces)
    assert "".join(pieces) == text


def test_split_sentences_chinese_and_english():
    assert split_sentences("二加三等于五。蜘蛛有八条腿。好。一年有十二个月！", min_chars=1) == \
        ["二加三等于五。", "蜘蛛有八条腿。", "好。", "一年有十二个月！"]
    assert split_sentences("你好!我是助手.") == ["你好!我是助手."]          # short: joined
    assert split_sentences("Hello there. This is a test, ok? Yes.") == ["Hello there.", "This is a test, ok?", "Yes."]
    assert split_sentences("It costs 3.5 dollars. Fine.") == ["It costs 3.5 dollars.", "Fine."]


# ------------------------------------------------------------------------------ phonemes
def test_mandarin_phonemes_in_kokoros_notation():
    from omniserve.engine.backends.embedded.components.mandarin import mandarin_phonemes

    assert mandarin_phonemes("北京是中国的首都。") == "pei↓ʨi→ŋ ʂɨ↘ ꭧʊ→ŋkwo↗ tɤ ʂou↓tu→."
    assert mandarin_phonemes("蜘蛛有八条腿。") == "ꭧɨ→ ꭧu→ jou↓ pa→ tʰjau↗ tʰwei↓."
    assert mandarin_phonemes("熊很穷") == "ɕjʊ↗ŋ xə↓n ʨʰjʊ↗ŋ"
    # digits read in Chinese, one word a number; Latin words to the English callable, else dropped
    assert mandarin_phonemes("25岁") == "ɚ↘ʂɨ↗u↓ swei↘"
    assert mandarin_phonemes("我叫Tom。", english=lambda t: f"<{t}>") == "wo↓ ʨjau↘ <Tom>."
    assert mandarin_phonemes("我叫Tom。") == "wo↓ ʨjau↘."
    assert mandarin_phonemes("好，走吧！") == "xau↓, ʦou↓pa!"
    # tone sandhi across words: 3-3 → 2-3; 一 before tone 4 → yi2, before 1–3 → yi4, not in numbers; 不 before 4
    assert mandarin_phonemes("很好，一年，一样，十一，第一天，不去，不来") == \
        "xə↗n xau↓, i↘ njɛ↗n, i↗ ja↘ŋ, ʂɨ↗ i→, ti↘ i→ tʰjɛ→n, pu↗ ʨʰy↘, pu↘ lai↗"


def test_pinyin_syllables_special_cases():
    from omniserve.engine.backends.embedded.components.mandarin import syllable

    assert [syllable(p) for p in ("zhi1", "chi1", "shi4", "ri4", "zi3", "ci2", "si1")] == \
        ["ꭧɨ→", "ꭧʰɨ→", "ʂɨ↘", "ɻɨ↘", "ʦɨ↓", "ʦʰɨ↗", "sɨ→"]
    assert [syllable(p) for p in ("ju4", "qu4", "xue2", "jun1", "lv4", "nve4")] == \
        ["ʨy↘", "ʨʰy↘", "ɕɥe↗", "ʨy→n", "ly↘", "nɥe↘"]
    assert [syllable(p) for p in ("yi1", "ya1", "you3", "yong4", "yu2", "yuan2", "yun2", "wu3", "wo3", "wei4")] == \
        ["i→", "ja→", "jou↓", "jʊ↘ŋ", "y↗", "ɥɛ↗n", "y↗n", "u↓", "wo↓", "wei↘"]
    assert [syllable(p) for p in ("liu2", "gui4", "dun4", "bo1", "er2", "de5", "n2", "o2")] == \
        ["ljou↗", "kwei↘", "twə↘n", "pwo→", "ɚ↗", "tɤ", "n↗", "ɔ↗"]


def test_numbers_read_in_chinese():
    from omniserve.engine.backends.embedded.components.mandarin import number_hanzi

    cases = {"0": "零", "10": "十", "12": "十二", "105": "一百零五", "110": "一百一十", "1050": "一千零五十",
             "10001": "一万零一", "120000000": "一亿二千万", "3.5": "三点五", "007": "零零七"}
    assert {n: number_hanzi(n) for n in cases} == cases
    assert number_hanzi("2024", "年") == "二零二四" and number_hanzi("2", "个") == "两"


# ------------------------------------------------------------------------------ routing
class _Engine:
    def __init__(self, infos, chinese=()):
        self._infos = infos
        self.chinese_voices = chinese
        self.calls = []

    def voices(self):
        return self._infos

    def synthesize(self, text, voice=None, speed=1.0):
        self.calls.append((text, voice, speed))
        return np.zeros(10, np.float32)


def test_voice_bank_sends_chinese_to_a_mandarin_voice():
    piper = _Engine([VoiceInfo("piper:joe", 105.0, 5.3, "m")])
    kokoro = _Engine([VoiceInfo("kokoro:jf_alpha", 264.0, 4.3, "f"), VoiceInfo("kokoro:jf_nezumi", 240.0, 5.2, "f"),
                      VoiceInfo("kokoro:jm_kumo", 94.0, 4.8, "m")],
                     chinese=("kokoro:jm_kumo", "kokoro:jf_nezumi"))
    bank = VoiceBank({"piper": piper, "kokoro": kokoro}, Voice("piper:joe", ""))
    bank.synthesize("Hello there.", Voice("piper:joe@1.10", ""))
    assert piper.calls == [("Hello there.", "piper:joe", 1.1)] and not kokoro.calls
    bank.synthesize("你好，我叫Tom。", Voice("piper:joe@1.10", ""))
    assert kokoro.calls[-1] == ("你好，我叫Tom。", "kokoro:jm_kumo", 1.1)
    bank.synthesize("一年有十二个月。", Voice("kokoro:jf_alpha", ""))
    assert kokoro.calls[-1][1] == "kokoro:jf_nezumi"            # nearest in pitch among the Mandarin voices
    bank.synthesize("一年有十二个月。", Voice("kokoro:jm_kumo", ""))
    assert kokoro.calls[-1][1] == "kokoro:jm_kumo"
    bank.synthesize("English text.", Voice("kokoro:jf_alpha", ""))
    assert kokoro.calls[-1][1] == "kokoro:jf_alpha"
    assert len(piper.calls) == 1


# ------------------------------------------------------------------------------ real models
@pytest.fixture(scope="module")
def asr():
    from omniserve.engine.backends.embedded.components.asr import WhisperASR

    return WhisperASR("base", threads=2)


def test_kokoro_speaks_chinese_whisper_understands(asr):
    from tests.conftest import character_error_rate as cer
    from omniserve.engine.backends.embedded.components.tts import KokoroTTS

    kokoro = KokoroTTS(threads=2)
    text = "今天天气很好，我们去公园散步吧。"
    audio = kokoro.synthesize(text, voice="kokoro:jm_kumo")
    assert audio.dtype == np.float32 and 2.0 < audio.size / OUT_RATE < 6.0
    heard = asr.transcribe(resample(audio, OUT_RATE, 16000), language="zh")
    assert cer(text, heard) <= 0.3, heard
    # English through the same engine is unchanged by the Chinese path
    assert kokoro.phonemize("Hello there.") == kokoro.phonemize_chinese("Hello there.").strip()
