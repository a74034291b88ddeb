"""The duplex policy's constants, in one place (values and meaning unchanged from the one-module
policy they came from). Audio time is counted in VAD windows of 512 samples (32 ms)."""
from __future__ import annotations

WINDOW = 512
WINDOW_MS = WINDOW * 1000 / 16000          # 32 ms
SPEECH_P, SILENCE_P = 0.5, 0.35            # Silero hysteresis
START_MS = 190                             # this much speech opens an utterance
END_SILENCE_MS = 480                       # silence after speech that ends the user's turn
SPECULATE_MS = 128                         # silence that already starts the reply (dropped if speech resumes)
DISCARD_MS = 2 * WINDOW_MS                 # voiced time after a speculative start that drops it
FIRST_WORDS = 3                            # the reply's first spoken piece: this many words (first audio sooner)
PARTIAL_MAX = 160000                       # partial captions read the utterance's last 10 s
PARTIAL_MIN = 8000                         # … and wait for 0.5 s of it
MIN_UTTERANCE_MS = 250                     # shorter voiced time is noise: no reply
MAX_UTTERANCE_S = 30.0                     # a longer monologue is answered at this point
PREROLL_MS = 400
FRAME_EVERY_S = 3.0                        # re-describe the camera at most this often
REPLY_MAX_TOKENS = 120
AUDIO_LEAD_MS = 200                        # extra audio on a reply's first speaking unit
OUT_SAMPLES_PER_MS = 24                    # replies are 24 kHz
TTS_FRAME = 960                            # n_tts_tokens counts 40 ms frames
_MAX_UTT_WINDOWS = int(MAX_UTTERANCE_S * 1000 / WINDOW_MS) + 1
FINAL_ASR_FAST = True                      # an "en" session: tiny.en for the final transcript too (as its captions)
CAPTION_WAIT_S, CAPTION_POLL_S = 10.0, 0.05   # a reply waits this long for a caption's words

# Speech over a reply (overlap.py): a backchannel lets the reply go on, an interruption cuts it.
BARGE_IN_MS = 500                          # voiced speech over a reply that cuts it …
BARGE_IN_WORDS = 2                         # … or this many words heard in it (backchannel words not counted),
WORDS_MIN_MS = 300                         # once it has this much voiced time (Whisper invents words on a blip)
BACKCHANNEL_END_MS = 320                   # silence that ends speech over a reply short of those: a backchannel
BACKCHANNEL_WORDS = frozenset("""yeah yes yep yup ya yah ok okay right sure mm mhm mmhm hm hmm mm-hm mm-hmm mm-mm
    uh-huh uh-uh uh huh um ah oh wow aha alright cool nice great""".split())
BACKCHANNEL_PHRASES = ("i see", "got it", "of course", "i know", "that's right", "uh huh")   # not counted either
# Chinese has no spaces: each character counts as a word, except these backchannel characters
# (嗯 对 好的 是的 哦 啊 …: "对对对", "好的好的" are backchannels; "不是", "等一下" are not)
BACKCHANNEL_HAN = frozenset("嗯对好的是哦啊呀哈唔呃噢喔行")
# A unit with nothing to hand out while the reply is still being made waits this share of chunk_ms
# (at most WAIT_MAX_MS) for it, so audio goes out as soon as it exists, not a unit later.
WAIT_SHARE = 0.7
WAIT_MAX_MS = 700
