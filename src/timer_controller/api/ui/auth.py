"""Logging in and out of the dashboard, and the checks every page and form makes.

The session cookie is ``HttpOnly`` (no script reads it), ``SameSite=Strict``
(no other site's page sends it) and ``Secure`` when the request came over
HTTPS. A wrong token is answered with 401 and logged without the token.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from timer_controller.api.ui.render import Renderer, secured
from timer_controller.api.ui.session import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    SESSION_MAX_AGE_S,
    Session,
    Signer,
    derive_key,
)

log = logging.getLogger(__name__)

FormText = Annotated[str, Form()]
LOGIN_MAX_AGE_S = 3600
REFUSED_FORM = (
    "The form was refused: its CSRF token is missing or does not match your session. "
    "Reload the page and try again."
)


def safe_next(raw: str | None) -> str:
    """Only a path inside the dashboard: never another site (an open redirect)."""
    if raw and raw.startswith("/ui") and not raw.startswith("//") and "\\" not in raw:
        return raw
    return "/ui"


def _set_cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


class SessionGate:
    def __init__(
        self, tokens: Sequence[str], accepts: Callable[[str], bool], render: Renderer
    ) -> None:
        # The api's own constant-time check; the tokens themselves only key the cookies.
        self._accepts = accepts
        self._signer = Signer(derive_key(tokens))
        self._render = render

    def session(self, request: Request) -> Session | None:
        return self._signer.read_session(request.cookies.get(SESSION_COOKIE))

    def csrf(self, session: Session) -> str:
        return self._signer.csrf_token(session)

    def to_login(self, request: Request) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return secured(
            RedirectResponse(f"/ui/login?next={quote(safe_next(target))}", status_code=303)
        )

    def checked_session(self, request: Request, csrf_token: str) -> Session | Response:
        """The session of a state-changing form, or the answer refusing it."""
        session = self.session(request)
        if session is None:
            return self.to_login(request)
        if not self._signer.csrf_valid(session, csrf_token):
            log.warning("dashboard: refused a %s form without a valid CSRF token", request.url.path)
            context = {"title": "Form refused", "problem": REFUSED_FORM, "csrf_token": None}
            return self._render.html("error.html", context, status_code=403)
        return session

    # -- the login form ----------------------------------------------------

    def login_form(
        self,
        request: Request,
        next: str | None = None,
        problem: str | None = None,
        status_code: int = 200,
        notice: str | None = None,
    ) -> Response:
        if self.session(request) is not None and problem is None:
            return secured(RedirectResponse(safe_next(next), status_code=303))
        nonce, cookie = self._signer.new_login_nonce()
        context = {
            "title": "Log in",
            "login_csrf": self._signer.login_csrf_token(nonce),
            "next": safe_next(next),
            "problem": problem,
            "notice": notice,
        }
        response = self._render.html("login.html", context, status_code=status_code)
        _set_cookie(response, request, LOGIN_COOKIE, cookie, LOGIN_MAX_AGE_S)
        return response

    def login(
        self,
        request: Request,
        token: FormText = "",
        csrf_token: FormText = "",
        next: FormText = "/ui",
    ) -> Response:
        nonce = self._signer.read_login_nonce(request.cookies.get(LOGIN_COOKIE))
        if nonce is None or not self._signer.login_csrf_valid(nonce, csrf_token):
            log.warning("dashboard: refused a login form without a valid CSRF token")
            return self.login_form(request, next, problem=REFUSED_FORM, status_code=403)
        if not self._accepts(token):
            log.warning("dashboard: refused a login with a wrong token")
            problem = "That token is not accepted. Use one of the api's API_TOKENS."
            return self.login_form(request, next, problem=problem, status_code=401)
        _, cookie = self._signer.new_session()
        response = secured(RedirectResponse(safe_next(next), status_code=303))
        _set_cookie(response, request, SESSION_COOKIE, cookie, SESSION_MAX_AGE_S)
        response.delete_cookie(LOGIN_COOKIE, path="/ui")
        log.info("dashboard: logged in")
        return response

    def logout(self, request: Request, csrf_token: FormText = "") -> Response:
        session = self.checked_session(request, csrf_token)
        if not isinstance(session, Session):
            return session
        response = secured(RedirectResponse("/ui/login?bye=1", status_code=303))
        response.delete_cookie(SESSION_COOKIE, path="/ui", httponly=True, samesite="strict")
        return response

    def login_page(
        self, request: Request, next: str | None = None, bye: str | None = None
    ) -> Response:
        notice = "You are logged out." if bye else None
        return self.login_form(request, next, notice=notice)

    def add_routes(self, router: APIRouter) -> None:
        router.add_api_route("/ui/login", self.login_page, methods=["GET"])
        router.add_api_route("/ui/login", self.login, methods=["POST"])
        router.add_api_route("/ui/logout", self.logout, methods=["POST"])
