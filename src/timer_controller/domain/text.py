"""Echoing user input in error messages without echoing all of it."""

from __future__ import annotations

#: An echoed value longer than this is cut: a 2 MB setting must not become a 2 MB log line.
PREVIEW_CHARS = 120
#: A value quoted inside a reason, after the value itself was already shown.
QUOTE_CHARS = 40


def preview(value: object, limit: int = PREVIEW_CHARS) -> str:
    """``str(value)`` cut to ``limit`` characters, saying how much was left out.

    Control characters are escaped, so that the message stays one line.
    """
    text = str(value)
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    if len(text) <= limit:
        return shown
    return f"{shown}… ({len(text)} characters)"


def quoted(value: str, limit: int = QUOTE_CHARS) -> str:
    """``repr(value)`` of a value cut as by ``preview``."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}… ({len(value)} characters)"
