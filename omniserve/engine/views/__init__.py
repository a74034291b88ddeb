"""The three views over one backend: chat, half-duplex and full-duplex (contracts in ``api.py``)."""
from .chat import ChatSessionView
from .duplex import DuplexSessionView
from .half_duplex import HalfDuplexSessionView

__all__ = ["ChatSessionView", "HalfDuplexSessionView", "DuplexSessionView"]
