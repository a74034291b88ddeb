"""Backends: one package per backend (``embedded/``); the seam they implement is ``base.py``."""
