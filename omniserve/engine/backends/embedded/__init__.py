"""The embedded CPU cascade (VAD → ASR → LLM → TTS, plus vision), every model from a pip package."""
from .backend import EmbeddedBackend

__all__ = ["EmbeddedBackend"]
