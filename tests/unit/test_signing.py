"""Standard Webhooks secrets and signatures."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook

from timer_controller.delivery.signing import decode_secret, sign

KEY_A = bytes(range(32))
KEY_B = b"\xfe" * 24
SECRET_A = "whsec_" + base64.b64encode(KEY_A).decode()
SECRET_B = "whsec_" + base64.b64encode(KEY_B).decode()
SIGNATURE = re.compile(r"^v1,[A-Za-z0-9+/]{43}=$")  # 32-byte HMAC-SHA256 in base64


@pytest.mark.parametrize(
    ("secret", "key"),
    [
        (SECRET_A, KEY_A),
        (SECRET_A.removeprefix("whsec_"), KEY_A),
        (SECRET_B, KEY_B),
        ("whsec_" + base64.b64encode(b"k" * 16).decode(), b"k" * 16),
        ("whsec_" + base64.b64encode(b"\x00" * 64).decode(), b"\x00" * 64),
    ],
)
def test_decode_secret(secret: str, key: bytes) -> None:
    assert decode_secret(secret) == key


NOT_BASE64 = "a secret must be 'whsec_' followed by base64 (as Standard Webhooks issues them)"
TOO_SHORT = "a secret must decode to at least 16 bytes"


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("notbase64", NOT_BASE64),
        ("whsec_not base64!", NOT_BASE64),
        ("whsec_abc", NOT_BASE64),  # bad padding
        ("whsec_" + base64.urlsafe_b64encode(b"\xfb\xff" * 12).decode(), NOT_BASE64),
        ("whsec_", TOO_SHORT),
        ("", TOO_SHORT),
        ("whsec_AAAA", TOO_SHORT),
        ("whsec_" + base64.b64encode(b"k" * 15).decode(), TOO_SHORT),
    ],
)
def test_decode_secret_errors(secret: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        decode_secret(secret)

    assert str(caught.value) == message


def test_sign_is_v1_base64_hmac_sha256_of_id_timestamp_body() -> None:
    signature = sign((KEY_A,), msg_id="42", timestamp=1_700_000_000, body=b'{"id":42}')

    expected = hmac.new(KEY_A, b'42.1700000000.{"id":42}', hashlib.sha256).digest()
    assert SIGNATURE.match(signature)
    assert signature == "v1," + base64.b64encode(expected).decode()


def test_sign_agrees_with_standardwebhooks() -> None:
    when = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    body = '{"id":7,"due_at":"2025-01-01T00:00:00.000000Z"}'

    ours = sign((KEY_A,), msg_id="7", timestamp=int(when.timestamp()), body=body.encode())

    assert ours == Webhook(SECRET_A).sign(msg_id="7", timestamp=when, data=body)


@pytest.mark.parametrize("keys", [(KEY_A, KEY_B), (KEY_B, KEY_A), (KEY_A, KEY_B, b"c" * 16)])
def test_several_keys_give_space_separated_signatures_in_order(keys: tuple[bytes, ...]) -> None:
    signature = sign(keys, msg_id="1", timestamp=5, body=b"")

    parts = signature.split(" ")
    assert len(parts) == len(keys)
    assert all(SIGNATURE.match(part) for part in parts)
    assert parts == [sign((key,), msg_id="1", timestamp=5, body=b"") for key in keys]


@pytest.mark.parametrize(
    ("msg_id", "timestamp", "body"),
    [("43", 1_700_000_000, b"x"), ("42", 1_700_000_001, b"x"), ("42", 1_700_000_000, b"y")],
)
def test_signature_changes_with_id_timestamp_and_body(
    msg_id: str, timestamp: int, body: bytes
) -> None:
    reference = sign((KEY_A,), msg_id="42", timestamp=1_700_000_000, body=b"x")

    assert sign((KEY_A,), msg_id=msg_id, timestamp=timestamp, body=body) != reference


def test_no_keys_sign_nothing() -> None:
    assert sign((), msg_id="1", timestamp=1, body=b"x") == ""
