"""Keeping a task URL's credentials out of error texts and logs (pure).

Task URLs often carry a token in the query string (``?token=…``) or in the
userinfo (``https://user:pass@host/``). The HTTP libraries quote the URL in
their error messages, and those messages become ``last_error`` and log
lines; so every such text passes through ``scrub`` first.
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, parse_qsl, quote, unquote, urlsplit

REDACTED = "[redacted]"
# Anything that looks like an absolute URL, up to white space or a quote.
_URL_LIKE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
# Shorter pieces are not replaced on their own: "a=1" would mangle the text.
_MIN_SECRET_CHARS = 4


def redact_url(url: str) -> str:
    """``url`` without its userinfo, query string and fragment."""
    try:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
    except ValueError:  # e.g. an unclosed IPv6 bracket: keep only the scheme
        return url.partition("://")[0] + f"://{REDACTED}"
    kept = SplitResult(parts.scheme, host, parts.path, "", "").geturl()
    userinfo = "@" in parts.netloc
    return kept + (f"?{REDACTED}" if parts.query or parts.fragment or userinfo else "")


def scrub(text: str, url: str) -> str:
    """``text`` with ``url``'s secrets, and those of any URL in it, redacted."""
    text = _URL_LIKE.sub(lambda match: redact_url(match.group()), text)
    for secret in _secrets(url):
        text = text.replace(secret, REDACTED)
    return text


def _secrets(url: str) -> list[str]:
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
    found = {piece for piece in (parts.query, parts.fragment, userinfo) if piece}
    # Each value alone too, as a message may quote it decoded or re-encoded.
    found |= {value for _, value in parse_qsl(parts.query, keep_blank_values=True)}
    found |= set(userinfo.split(":", 1)) if userinfo else set()
    found |= {unquote(piece) for piece in found} | {quote(piece, safe="") for piece in found}
    # Longest first, so that a query is replaced before one of its parts.
    return sorted((s for s in found if len(s) >= _MIN_SECRET_CHARS), key=len, reverse=True)
