"""Dashboard sessions and CSRF tokens: signed, tied together, expiring, unforgeable."""

from __future__ import annotations

import pytest

from timer_controller.api.ui.session import (
    SESSION_MAX_AGE_S,
    Signer,
    derive_key,
)

TOKENS = ["tok-alpha-0123456789", "tok-beta-9876543210"]


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def signer(clock: Clock | None = None, tokens: list[str] = TOKENS) -> Signer:
    return Signer(derive_key(tokens), clock=clock or Clock())


def test_a_session_cookie_reads_back_and_its_csrf_token_matches_it() -> None:
    s = signer()
    session, cookie = s.new_session()
    assert s.read_session(cookie) == session
    assert s.csrf_valid(session, s.csrf_token(session))


@pytest.mark.parametrize(
    "tamper",
    [
        lambda c: c[:-1] + ("0" if c[-1] != "0" else "1"),  # signature
        lambda c: "x" + c,  # nonce
        lambda c: c.replace(".", ".1", 1),  # issued time
        lambda c: c.rsplit(".", 1)[0],  # no signature
        lambda c: "",
    ],
)
def test_a_tampered_cookie_is_no_session(tamper: object) -> None:
    s = signer()
    _, cookie = s.new_session()
    assert callable(tamper)
    assert s.read_session(tamper(cookie)) is None


def test_a_cookie_signed_for_other_tokens_is_refused() -> None:
    _, cookie = signer(tokens=["another-token-abcdef"]).new_session()
    assert signer().read_session(cookie) is None


def test_the_same_tokens_in_another_replica_accept_the_cookie() -> None:
    _, cookie = signer().new_session()
    assert signer(tokens=list(reversed(TOKENS))).read_session(cookie) is not None


def test_a_session_expires() -> None:
    clock = Clock()
    s = signer(clock)
    _, cookie = s.new_session()
    clock.now += SESSION_MAX_AGE_S - 1
    assert s.read_session(cookie) is not None
    clock.now += 2
    assert s.read_session(cookie) is None


def test_a_csrf_token_of_another_session_or_none_is_refused() -> None:
    s = signer()
    mine, _ = s.new_session()
    theirs, _ = s.new_session()
    assert not s.csrf_valid(mine, s.csrf_token(theirs))
    assert not s.csrf_valid(mine, "")
    assert not s.csrf_valid(mine, None)


def test_the_login_form_token_is_tied_to_its_pre_session_cookie() -> None:
    s = signer()
    nonce, cookie = s.new_login_nonce()
    assert s.read_login_nonce(cookie) == nonce
    assert s.login_csrf_valid(nonce, s.login_csrf_token(nonce))
    other, _ = s.new_login_nonce()
    assert not s.login_csrf_valid(nonce, s.login_csrf_token(other))
    assert s.read_login_nonce(nonce + ".forged") is None
    # A login token is not a session's CSRF token, and the other way round.
    session, _ = s.new_session()
    assert not s.csrf_valid(session, s.login_csrf_token(session.nonce))
