"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">``; with
several secrets (space separated) one signature per secret, space separated,
so receivers can rotate keys without downtime.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

SECRET_PREFIX = "whsec_"


def decode_secret(secret: str) -> bytes:
    """The HMAC key in a ``whsec_<base64>`` secret; ValueError if malformed."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            "a secret must be 'whsec_' followed by base64 (as Standard Webhooks issues them)"
        ) from None
    if len(key) < 16:
        raise ValueError("a secret must decode to at least 16 bytes")
    return key


def sign(keys: tuple[bytes, ...], *, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one request."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        for key in keys
    )
