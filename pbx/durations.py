"""Durations as the admin writes them in the PBX configuration.

A duration is a number of seconds (``60``, ``0.5``) or a string with units: ``"500ms"``,
``"20s"``, ``"5m"``, ``"1h"``, or a sum such as ``"1m30s"``. It always becomes a ``float`` of
seconds, so code that uses it never deals with units.
"""

from __future__ import annotations

import math
import re

__all__ = ["parse_duration"]

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?\s*(?:ms|s|m|h)\s*)+")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def parse_duration(value: object) -> float:
    """Return ``value`` as seconds.

    Accepts a non-negative int or float (seconds) or a string: a bare number (seconds) or one or
    more ``<number><unit>`` parts with units ``ms``, ``s``, ``m`` (minutes) and ``h``.
    Raises ``ValueError`` with a message fit to show the admin.
    """
    # bool is an int subclass: `ring_timeout: yes` must not silently mean one second.
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 30s, 500ms or 5m, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if _NUMBER.fullmatch(text):
            seconds = float(text)
        elif text and _WHOLE.fullmatch(text):
            seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(text))
        else:
            raise ValueError(
                f"invalid duration {value!r}: use seconds (30) or a number with a unit "
                "ms, s, m or h (500ms, 20s, 5m, 1h, 1m30s)"
            )
    else:
        raise ValueError(f"expected a duration such as 30s, 500ms or 5m, got {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"duration must be a finite number of seconds >= 0, got {value!r}")
    return seconds
