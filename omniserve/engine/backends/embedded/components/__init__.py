"""The cascade's model components, one small class per job (interfaces in ``base.py``).

- ``vad.SileroVAD`` / ``vad.VadSegmenter`` — voice activity, streaming segmentation
- ``asr.WhisperASR`` — speech to text (faster-whisper)
- ``llm.LlamaLM`` — the language model with KV-cache prefix reuse (llama-cpp-python)
- ``tts.PiperTTS`` / ``tts.KokoroTTS`` — text to speech at 24 kHz
- ``vision.VisionDescriber`` — a short caption from OCR, faces and scene colour
- ``text`` — speech text normalization and sentence splitting; ``voiceprint`` — pitch and rate

Modules import their heavy dependencies lazily, so importing this package is cheap.
"""
