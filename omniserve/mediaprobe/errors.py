"""Refusals of the header readers: short reasons that are safe to show a client."""
from __future__ import annotations


class MediaError(ValueError):
    """Media we refuse; ``str(e)`` is a short reason safe to show to a client."""


class UnsupportedFormat(MediaError):
    """Not a format on the caller's whitelist (or not recognisable at all)."""


class TooLarge(MediaError):
    """A header that claims more pixels, samples, channels or seconds than we accept."""
