"""The engine: UnifiedProcessor and its Chat / HalfDuplex / Duplex views (see api.py)."""
