"""The wire protocol shared by gateway, worker, tests and clients (see PROTOCOL.md)."""
from .messages import *  # noqa: F401,F403
from .messages import ProtocolError, duplex_variant, error  # noqa: F401
