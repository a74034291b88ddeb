"""JSON decoding of untrusted text with bounds checked BEFORE the decoder builds anything.

``json.loads`` recurses once per nesting level (``"[" * 50000`` raises ``RecursionError``) and
turns a few bytes into a whole object (``[{},{},…]`` costs ~64 bytes of memory per 3 bytes of
text). ``loads_bounded`` first walks the text's structure in one linear pass — strings are
skipped whole by a regular expression, so a multi-megabyte base64 string costs one C-level scan —
and refuses text that nests deeper than ``max_depth`` or holds more than ``max_values``
containers, strings and list/object members. Only then is ``json.loads`` called. ``NaN`` and
``Infinity`` (not JSON) are refused too, and so are numbers too large for a float (``1e999``).

Every failure is a ``JSONLimitError`` (a ``ValueError``) with a short text fit for a client.
"""
from __future__ import annotations

import json
import re
from typing import Any, Union

# the next character that matters to the structure: a string start, a bracket or a separator
_STRUCTURE = re.compile(r'["\[\]{},:]')
# the rest of a string after its opening quote (possessive: linear even when it never closes)
_STRING_REST = re.compile(r'[^"\\]*+(?:\\.[^"\\]*+)*+"', re.S)


_INF = float("inf")


class JSONLimitError(ValueError):
    """Text that is not JSON or is over a bound; ``str(e)`` is short and names no input."""


def _no_constant(name: str) -> Any:
    raise JSONLimitError(f"{name} is not valid JSON")


def _string_end(text: str, start: int, string_rest: Any) -> int:
    """Index after the string that opened at ``start - 1``. Fast path: the next quote is not
    preceded by a backslash (one ``find``); otherwise the escape-aware expression decides."""
    j = text.find('"', start)
    if j < 0:
        raise JSONLimitError("Invalid JSON: unterminated string")
    if text[j - 1] != "\\":
        return j + 1
    end = string_rest(text, start)
    if end is None:
        raise JSONLimitError("Invalid JSON: unterminated string")
    return end.end()


def _finite(number: str) -> float:
    value = float(number)
    if value in (_INF, -_INF):
        raise JSONLimitError("Invalid JSON: a number is out of range")
    return value


def check_shape(text: str, max_depth: int, max_values: int) -> None:
    """Raise ``JSONLimitError`` when ``text`` nests deeper than ``max_depth`` or has more than
    ``max_values`` structural tokens. Does not validate the JSON itself (the decoder does)."""
    depth = 0
    values = 0
    pos = 0
    search = _STRUCTURE.search
    string_rest = _STRING_REST.match
    while True:
        m = search(text, pos)
        if m is None:
            return
        c = m.group()
        values += 1
        if values > max_values:
            raise JSONLimitError(f"JSON has too many values (limit {max_values})")
        if c == '"':
            pos = _string_end(text, m.end(), string_rest)
            continue
        if c == "[" or c == "{":
            depth += 1
            if depth > max_depth:
                raise JSONLimitError(f"JSON nested too deeply (limit {max_depth} levels)")
        elif c == "]" or c == "}":
            depth -= 1
        pos = m.end()


def loads_bounded(raw: Union[str, bytes, bytearray], max_depth: int, max_values: int) -> Any:
    """Decode ``raw`` (text, or UTF-8 bytes) within the bounds; never raises anything but
    ``JSONLimitError`` — whatever the input (deep nesting, huge numbers, bad bytes, no memory)."""
    try:
        text = raw if isinstance(raw, str) else bytes(raw).decode("utf-8")
        check_shape(text, max_depth, max_values)
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except JSONLimitError:
        raise
    except UnicodeError:
        raise JSONLimitError("Invalid JSON: not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise JSONLimitError(f"Invalid JSON: {e.msg} at position {e.pos}") from None
    except RecursionError:  # not reachable within the depth bound; kept as a last line
        raise JSONLimitError(f"JSON nested too deeply (limit {max_depth} levels)") from None
    except MemoryError:
        raise JSONLimitError("JSON too large to decode") from None
    except ValueError:  # e.g. an integer with more digits than Python converts
        raise JSONLimitError("Invalid JSON: a number is out of range") from None
    except Exception:
        raise JSONLimitError("Invalid JSON") from None
