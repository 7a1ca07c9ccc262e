"""Idempotency keys: the header's two forms, and what counts as the same request (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from timer_controller.api.idempotency import BadKey, check_key, parse_key_header, request_hash
from timer_controller.api.models import BatchItem, TimerSpec


@pytest.mark.parametrize(
    ("header", "key"),
    [
        ('"k-1"', "k-1"),
        ("k-1", "k-1"),
        ('  "k-1"\t', "k-1"),
        ('"order 42: pay"', "order 42: pay"),
        (r'"say \"hi\""', 'say "hi"'),
        (r'"back\\slash"', "back\\slash"),
        ("8e0f3c2a-0d4e-4b43-9d0b-2b8a6f0d9a11", "8e0f3c2a-0d4e-4b43-9d0b-2b8a6f0d9a11"),
        ('"K-1"', "K-1"),
        ('"' + "x" * 255 + '"', "x" * 255),
    ],
)
def test_quoted_and_bare_keys_store_the_unquoted_value(header: str, key: str) -> None:
    assert parse_key_header(header) == key


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ('""', "must not be empty"),
        ("", "must be a quoted string"),
        ('"unterminated', "must be a quoted string"),
        ('"a"b"', "must be a quoted string"),
        (r'"bad \x escape"', "must be a quoted string"),
        ("two words", "must be a quoted string"),
        ('"café"', "must be a quoted string"),
        ('"' + "x" * 256 + '"', "at most 255 characters"),
        ("x" * 256, "at most 255 characters"),
    ],
)
def test_a_malformed_key_header_is_refused(header: str, reason: str) -> None:
    with pytest.raises(BadKey, match=reason):
        parse_key_header(header)


@pytest.mark.parametrize(("key", "ok"), [("k 1", True), ("k\n1", False), ("ключ", False)])
def test_a_batch_key_is_printable_ascii(key: str, ok: bool) -> None:
    if ok:
        assert check_key(key) == key
    else:
        with pytest.raises(BadKey):
            check_key(key)


def spec_hash(body: str, model: type[TimerSpec] = TimerSpec) -> str:
    """The hash the api stores for a request body, as the route computes it."""
    spec = model.model_validate_json(body)
    return request_hash(
        spec.model_dump(mode="json", exclude_unset=True, exclude={"idempotency_key"})
    )


URL = '"url": "https://example.com/hook"'


def test_the_same_delay_sent_twice_is_the_same_request() -> None:
    assert spec_hash(f'{{{URL}, "delay": "1h"}}') == spec_hash(f'{{{URL}, "delay": "1h"}}')


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (f'{{{URL}, "delay": "1h"}}', f'{{"delay": "1h", {URL}}}'),
        (f'{{{URL}, "delay": "1h"}}', f'{{ {URL} ,\n  "delay" : "1h" }}'),
        (f'{{{URL}, "delay": 60}}', f'{{{URL}, "delay": 60.0}}'),
        (
            f'{{{URL}, "delay": 1, "headers": {{"A": "1", "B": "2"}}}}',
            f'{{{URL}, "delay": 1, "headers": {{"B": "2", "A": "1"}}}}',
        ),
    ],
)
def test_order_and_white_space_do_not_matter(first: str, second: str) -> None:
    assert spec_hash(first) == spec_hash(second)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (f'{{{URL}, "delay": "1h"}}', f'{{{URL}, "delay": "2h"}}'),
        (f'{{{URL}, "delay": "1h"}}', f'{{{URL}, "delay": 3600}}'),
        (f'{{{URL}, "delay": 5}}', '{"url": "https://example.com/other", "delay": 5}'),
        (f'{{{URL}, "delay": 5}}', f'{{{URL}, "delay": 5, "method": "POST"}}'),
        (f'{{{URL}, "delay": 5}}', f'{{{URL}, "delay": 5, "body": ""}}'),
        (f'{{{URL}, "delay": 5, "body": "a"}}', f'{{{URL}, "delay": 5, "body": "b"}}'),
        (
            f'{{{URL}, "delay": 5, "headers": {{"A": "secret-1"}}}}',
            f'{{{URL}, "delay": 5, "headers": {{"A": "secret-2"}}}}',
        ),
    ],
)
def test_any_other_difference_is_another_request(first: str, second: str) -> None:
    assert spec_hash(first) != spec_hash(second)


def test_a_batch_entry_hashes_as_the_same_single_create_without_its_key() -> None:
    single = spec_hash(f'{{{URL}, "delay": "1h"}}')
    entry = spec_hash(f'{{{URL}, "delay": "1h", "idempotency_key": "k-1"}}', BatchItem)

    assert entry == single


def test_the_hash_is_sha256_hex() -> None:
    fields: dict[str, Any] = {"url": "https://example.com/hook", "delay": "1h"}

    digest = request_hash(fields)

    assert len(digest) == 64
    assert int(digest, 16) >= 0
    assert digest != request_hash({**fields, "delay": "1H"})


def test_an_unpaired_surrogate_cannot_be_hashed_or_stored() -> None:
    with pytest.raises(ValueError, match="unpaired UTF-16 surrogate"):
        request_hash({"body": "\ud800"})
