"""Which destination a task's URL calls: scheme, host and port. Pure.

A destination is what one slow receiver can hold up: every URL on it shares
its connections and its fate. Two spellings of one destination
(``HTTP://Example.com`` and ``http://example.com:80``) are one destination.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


class Destination(NamedTuple):
    scheme: str
    host: str
    port: int


def destination_of(url: str) -> Destination:
    """The URL's destination; an unparsable URL is a destination of its own.

    Such a row fails validation before any request is made, so the only
    point is that it never shares a limit with a real receiver.
    """
    try:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        port = parts.port or _DEFAULT_PORTS.get(scheme, 0)
        host = (parts.hostname or "").lower()
    except ValueError:
        return Destination("invalid", url[:200], 0)
    return Destination(scheme, host, port)


def url_prefix(url: str) -> str:
    """The URL up to its third ``/``: ``SUBSTRING_INDEX(url, '/', 3)`` in SQL.

    For ``scheme://authority/path`` that is ``scheme://authority``, as
    written; claims compare it to skip a saturated destination's rows.
    """
    return "/".join(url.split("/", 3)[:3])
