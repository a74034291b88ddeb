"""The engine: UnifiedProcessor and its Chat / HalfDuplex / Duplex views (see api.py).

Importing this package is cheap; models load when a processor is built.
"""
from .processor import UnifiedProcessor, load_processor

__all__ = ["UnifiedProcessor", "load_processor"]
