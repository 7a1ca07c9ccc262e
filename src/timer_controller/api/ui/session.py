"""Signed session cookies and the CSRF tokens tied to them; no server-side store.

The signing key is derived from ``API_TOKENS``: every api replica with the
same tokens accepts the same cookies, and changing the tokens ends every
session at once. A cookie is ``<nonce>.<issued unix s>.<signature>``; it
exists only after a login, and its nonce is fresh at every login, so a
cookie planted before a login is worthless after it.

Logging in is itself protected: the login form's CSRF token is tied to a
short-lived pre-session cookie (``<nonce>.<signature>``), so another site
cannot log a browser in with the attacker's token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

SESSION_COOKIE = "tc_session"
LOGIN_COOKIE = "tc_login"
#: A session lasts a working day, then the operator logs in again.
SESSION_MAX_AGE_S = 12 * 3600
_KEY_LABEL = b"timer-controller/ui-session/v1"


def derive_key(tokens: Sequence[str]) -> bytes:
    """The cookie-signing key: a hash of the tokens, never one of them."""
    material = "\n".join(sorted(tokens)).encode()
    return hmac.new(_KEY_LABEL, material, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class Session:
    nonce: str
    issued_s: int


class Signer:
    def __init__(self, key: bytes, *, clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self._clock = clock

    def _sign(self, purpose: str, value: str) -> str:
        mac = hmac.new(self._key, f"{purpose}:{value}".encode(), hashlib.sha256)
        return mac.hexdigest()

    def _valid(self, purpose: str, value: str, signature: str) -> bool:
        return hmac.compare_digest(self._sign(purpose, value), signature)

    # -- the logged-in session ---------------------------------------------

    def new_session(self) -> tuple[Session, str]:
        session = Session(nonce=secrets.token_urlsafe(18), issued_s=int(self._clock()))
        value = f"{session.nonce}.{session.issued_s}"
        return session, f"{value}.{self._sign('session', value)}"

    def read_session(self, cookie: str | None) -> Session | None:
        """The session a cookie carries, or None if it is absent, forged or expired."""
        parts = (cookie or "").split(".")
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        nonce, issued, signature = parts
        if not self._valid("session", f"{nonce}.{issued}", signature):
            return None
        age_s = self._clock() - int(issued)
        if not -60 <= age_s <= SESSION_MAX_AGE_S:
            return None
        return Session(nonce=nonce, issued_s=int(issued))

    def csrf_token(self, session: Session) -> str:
        return self._sign("csrf", session.nonce)

    def csrf_valid(self, session: Session, token: str | None) -> bool:
        return self._valid("csrf", session.nonce, token or "")

    # -- before logging in -------------------------------------------------

    def new_login_nonce(self) -> tuple[str, str]:
        """A pre-session nonce and its cookie value."""
        nonce = secrets.token_urlsafe(18)
        return nonce, f"{nonce}.{self._sign('login', nonce)}"

    def read_login_nonce(self, cookie: str | None) -> str | None:
        nonce, _, signature = (cookie or "").partition(".")
        return nonce if nonce and self._valid("login", nonce, signature) else None

    def login_csrf_token(self, nonce: str) -> str:
        return self._sign("login-csrf", nonce)

    def login_csrf_valid(self, nonce: str, token: str | None) -> bool:
        return self._valid("login-csrf", nonce, token or "")
