"""Bearer tokens (RFC 6750) for every ``/v1`` request, compared in constant time.

The tokens are hashed once; a presented token is hashed and compared with
every stored hash, without stopping at a match, so neither a token's length
nor its position in ``API_TOKENS`` shows in the answer's timing. Tokens are
never logged: not here, and not by the access log, which is off.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from timer_controller.api.problems import ApiProblem

REALM = "timer-controller"
# auto_error=False: a missing or malformed header is our 401 problem, not FastAPI's 403.
_scheme = HTTPBearer(auto_error=False, description="one of the tokens in API_TOKENS")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


class BearerAuth:
    """A FastAPI dependency: ``Depends(auth)`` admits requests with a known token."""

    def __init__(self, tokens: Sequence[str]) -> None:
        if not tokens:
            raise ValueError("BearerAuth needs at least one token")
        self._digests = tuple(_digest(token) for token in tokens)

    def accepts(self, token: str) -> bool:
        presented = _digest(token)
        found = False
        for digest in self._digests:
            found |= hmac.compare_digest(presented, digest)
        return found

    def admits(self, authorization: str | None) -> bool:
        """True when an ``Authorization`` header value is a bearer token we know.

        Read as the dependency below reads it (HTTPBearer), so that what this
        admits, the dependency admits too.
        """
        scheme, credentials = get_authorization_scheme_param(authorization)
        if not (authorization and scheme and credentials) or scheme.lower() != "bearer":
            return False
        return self.accepts(credentials)

    # async: a plain check on the event loop, rather than a hop to a worker thread.
    async def __call__(
        self, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_scheme)]
    ) -> None:
        if credentials is None:
            raise ApiProblem(
                401,
                "this request needs an Authorization: Bearer <token> header "
                "with one of the tokens in API_TOKENS",
                headers={"WWW-Authenticate": f'Bearer realm="{REALM}"'},
            )
        if not self.accepts(credentials.credentials):
            raise ApiProblem(
                401,
                "the bearer token is not one of API_TOKENS",
                headers={"WWW-Authenticate": f'Bearer realm="{REALM}", error="invalid_token"'},
            )
