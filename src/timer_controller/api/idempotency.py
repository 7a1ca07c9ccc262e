"""Idempotency keys (draft-ietf-httpapi-idempotency-key-header): parsing and comparison.

The header is a Structured Field string, ``Idempotency-Key: "k-1"``; the
bare ``k-1`` many clients send is accepted too. Either way the stored key is
the unquoted value.

"The same payload" is the same request body: the hash is taken over the
fields as sent (not over the due time they compute), so ``{"delay": "1h"}``
sent twice is a replay although the two due times would differ. Key order
and white space do not matter; an added default does.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from timer_controller.db.models import IDEMPOTENCY_KEY_MAX_CHARS

# What a stored key may hold: printable ASCII (the column is ascii_bin).
_KEY = re.compile(r"[\x20-\x7e]+")
# sf-string: DQUOTE *( unescaped / "\" ( DQUOTE / "\" ) ) DQUOTE (RFC 8941 3.3.3)
_SF_STRING = re.compile(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"')
_BARE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
UNPAIRED_SURROGATE = "the request holds an unpaired UTF-16 surrogate (\\ud800-\\udfff)"


class BadKey(ValueError):
    """The key is malformed; the message says how."""


def check_key(key: str) -> str:
    """``key`` when it may be stored; raises BadKey."""
    if not key:
        raise BadKey("an idempotency key must not be empty")
    if len(key) > IDEMPOTENCY_KEY_MAX_CHARS:
        raise BadKey(
            f"an idempotency key is at most {IDEMPOTENCY_KEY_MAX_CHARS} characters, not {len(key)}"
        )
    if not _KEY.fullmatch(key):
        raise BadKey("an idempotency key may hold printable ASCII characters only")
    return key


def parse_key_header(raw: str) -> str:
    """The key in an ``Idempotency-Key`` header, unquoted; raises BadKey."""
    value = raw.strip(" \t")
    quoted = _SF_STRING.fullmatch(value)
    if quoted is not None:
        return check_key(re.sub(r"\\(.)", r"\1", quoted.group(1)))
    if _BARE.fullmatch(value):
        return check_key(value)
    raise BadKey(
        'Idempotency-Key must be a quoted string such as "k-1" (or a bare k-1) of printable ASCII'
    )


def request_hash(fields: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the request's fields as sent, in a canonical JSON form.

    Raises ValueError when a string cannot be stored (an unpaired surrogate).
    """
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    try:
        data = canonical.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(UNPAIRED_SURROGATE) from None
    return hashlib.sha256(data).hexdigest()
