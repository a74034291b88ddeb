"""The OpenAI Realtime protocol on a worker: the session (``session.py``), its conversation
(``items.py``), its responses (``responses.py``) and the server events (``wire.py``)."""
from .session import RealtimeConnection, beta_requested

__all__ = ["RealtimeConnection", "beta_requested"]
