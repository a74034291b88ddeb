"""The three views over one backend: chat, half-duplex and full-duplex (contracts in ``api.py``)."""
from .chat import ChatSession
from .duplex import DuplexSessionView
from .half_duplex import HalfDuplexSession

__all__ = ["ChatSession", "HalfDuplexSession", "DuplexSessionView"]
