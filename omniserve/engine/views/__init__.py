"""The views over one backend: chat, half-duplex, full-duplex and realtime (contracts in ``api.py``)."""
from .chat import ChatSessionView
from .duplex import DuplexSessionView
from .half_duplex import HalfDuplexSessionView
from .realtime import RealtimeSessionView

__all__ = ["ChatSessionView", "HalfDuplexSessionView", "DuplexSessionView", "RealtimeSessionView"]
