"""Full duplex on the embedded cascade: decide, every unit of audio, whether to listen or speak.

A cascade has no listen/speak tokens, so the decision is a small policy over Silero VAD run on
every 512-sample window of the unit:

- **listen** while the user speaks (an utterance opens after ~190 ms of speech); a background
  thread transcribes the growing utterance for live captions (in the session's language:
  ``Cascade.transcribe``), and prefills the words heard so far (the reply's own prefill is then a
  few tokens at most);
- **end of turn** once the utterance is followed by ``END_SILENCE_MS`` of silence (scaled by
  ``listen_prob_scale``), held up to ``engine.turn_max_silence_ms`` while the caption's words sound
  unfinished (``engine.end_of_turn`` other than "silence"). The reply already starts, speculatively, after ``SPECULATE_MS`` of
  silence in the background (final ASR, or the last caption when it heard every voiced window,
  prefill of only the new tokens, LLM → a 3-word first piece → TTS); it is dropped unheard if
  the user goes on speaking, and once the turn is confirmed the units hand it out: at most
  ``max_new_speak_tokens_per_chunk`` tokens of text and about ``chunk_ms`` of audio per unit;
- **audio as soon as it exists**: a speaking unit with nothing to hand out yet, while the client
  is about to run dry, waits a share of the unit for the reply's next audio (``WAIT_SHARE``);
- **speech over the reply** (``overlap.py``): once the assistant is heard, user speech is judged,
  not obeyed at once: ``BARGE_IN_MS`` of it or ``BARGE_IN_WORDS`` words cut the reply (buffers
  dropped, ``end_of_turn``) and it becomes the next utterance; a shorter backchannel ("yeah") is
  dropped, the reply goes on and the backchannel is never answered. Speech before any of the
  reply was heard cuts it at once.

The session's phase (LISTENING / SPECULATING / SPEAKING) and its moves are in ``state.py``; the
session (``session.py``) makes the moves and the pieces do the work: ``utterance.py``,
``captions.py``, ``camera.py``, ``turn.py``, ``overlap.py``; constants in ``tuning.py``. The unit call itself
only runs VAD and moves buffers (a few ms); everything heavy runs in background threads, and
each unit's ``cost_all_ms`` counts that background work too (``costs.py`` defines every timing).
Memory stays bounded for hour-long sessions: the utterance is capped, the conversation is a
sliding window, buffers are per reply.
"""
from .session import EmbeddedDuplex
from .state import DuplexPhase

__all__ = ["EmbeddedDuplex", "DuplexPhase"]
