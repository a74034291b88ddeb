"""The engine: UnifiedProcessor and its Chat / HalfDuplex / Duplex views (see api.py).

Importing this package is cheap; models load when a processor is built.

``OMP_WAIT_POLICY=PASSIVE`` is set (unless already set) before any model library loads: llama.cpp
and CTranslate2 use OpenMP, whose default spin-waiting threads collapse when the cores are shared
(measured on 2 busy cores: llama.cpp decode 1.7 tok/s spinning vs 12.9 tok/s passive). Every
engine module is imported through this package, so this runs first.
"""
import os as _os

_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .processor import UnifiedProcessor, load_processor

__all__ = ["UnifiedProcessor", "load_processor"]
