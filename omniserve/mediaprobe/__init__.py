"""Header readers for untrusted media: what a file claims to be, read without decoding it.

Every image, audio file and video a client sends is sniffed here first; the caller refuses
formats outside its whitelist and sizes over its caps *before* any decoder allocates memory for
pixels or samples. Pure Python on the first bytes of the file (plus, for Ogg, the last page):
imported by the gateway and the worker alike, so it must never import ``omniserve.engine``.

Errors are ``MediaError`` with a short reason for the client: never a library message or a path.
"""
from .audio import (MAX_AUDIO_CHANNELS, MAX_AUDIO_RATE, MIN_AUDIO_RATE, AudioHeader, audio_header,
                    check_audio_header)
from .containers import VIDEO_CONTAINERS, container
from .errors import MediaError, TooLarge, UnsupportedFormat
from .images import IMAGE_FORMATS, MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE, ImageHeader, check_image, image_header

__all__ = ["AudioHeader", "IMAGE_FORMATS", "ImageHeader", "MAX_AUDIO_CHANNELS", "MAX_AUDIO_RATE",
           "MAX_IMAGE_PIXELS", "MAX_IMAGE_SIDE", "MIN_AUDIO_RATE", "MediaError", "TooLarge",
           "UnsupportedFormat", "VIDEO_CONTAINERS", "audio_header", "check_audio_header", "check_image",
           "container", "image_header"]
