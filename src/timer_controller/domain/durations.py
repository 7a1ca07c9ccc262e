"""Parsing of human durations such as ``30s``, ``15m``, ``12h`` or ``7d``."""

from __future__ import annotations

import math
import re

from timer_controller.domain.text import quoted

_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*")
DAY_S = 86400.0
#: The longest duration accepted anywhere unless a caller asks for less: a
#: century, far inside what MySQL's DATETIME arithmetic (up to year 9999) can add to now.
MAX_DURATION_S = 36500 * DAY_S
#: What a duration string looks like, for schemas that describe one (anchored,
#: as JSON Schema patterns are not).
DURATION_PATTERN = rf"^{_DURATION.pattern}$"


def parse_duration_s(raw: str | float | int, *, max_s: float = MAX_DURATION_S) -> float:
    """Seconds in ``raw``; a bare number means seconds.

    Raises ValueError with a message meant for the user.
    """
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        seconds = float(raw)
        if seconds < 0:
            raise ValueError("must not be negative")
    else:
        match = _DURATION.fullmatch(str(raw))
        if match is None:
            raise ValueError(
                f"{quoted(str(raw))} is not a duration; use a number of seconds or a number "
                "with a unit: ms, s, m, h, d or w (e.g. 30s, 15m, 7d)"
            )
        number, unit = match.groups()
        seconds = float(number) * _UNITS_S[unit or "s"]
    if not math.isfinite(seconds) or seconds > max_s:
        if math.isinf(max_s):
            raise ValueError("is too large to be a duration")
        raise ValueError(f"must be at most {format_duration(max_s)}")
    return seconds


def format_duration(seconds: float) -> str:
    """``seconds`` in the largest unit that divides it: 86400 → ``1d``."""
    for unit in ("d", "h", "m"):
        size = _UNITS_S[unit]
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
