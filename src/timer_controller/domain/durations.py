"""Parsing of human durations such as ``30s``, ``15m``, ``12h`` or ``7d``."""

from __future__ import annotations

import re

_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
#: What a duration string looks like, for schemas that describe one.
DURATION_PATTERN = _DURATION.pattern


def parse_duration_s(raw: str | float | int) -> float:
    """Seconds in ``raw``; a bare number means seconds.

    Raises ValueError with a message meant for the user.
    """
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        if raw < 0:
            raise ValueError("must not be negative")
        return float(raw)
    match = _DURATION.match(str(raw))
    if match is None:
        raise ValueError(
            f"{raw!r} is not a duration; use a number of seconds or a number "
            "with a unit: ms, s, m, h, d or w (e.g. 30s, 15m, 7d)"
        )
    number, unit = match.groups()
    return float(number) * _UNITS_S[unit or "s"]
