"""Following redirects hop by hop, with every hop's body left unread.

httpx's own redirect handling reads each redirect's body whole, and
decoded: a 302 with a 1 MiB gzip body that inflates to gigabytes took a pod
past 2 GB. Here a redirect's body is never read (the connection is closed
instead of drained), and nothing is ever decompressed, so the dispatcher's
64 KiB read limit is the only read there is.

What a browser would do with the request on each hop, as RFC 9110 §15.4
describes it:

* 301 and 302 turn a POST into a GET, and 303 turns anything but HEAD into a
  GET; a GET carries no body and none of the headers that describe one.
* 307 and 308 repeat the request as it was.
* On a hop to another origin (scheme, host or port) only the controller's
  own headers go along; a row's custom headers are often credentials.
"""

from __future__ import annotations

import httpx

from timer_controller.delivery.policy import BlockedDestinationError, TargetPolicy, check_url

MAX_REDIRECTS = 10
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
# Headers the controller sets itself (request.py); they survive any hop.
OWN_HEADERS = frozenset({"webhook-id", "webhook-timestamp", "webhook-signature", "user-agent"})
# What describes a body, or the old target; httpx sets Host for the new URL.
_BODY_HEADERS = frozenset(
    {"content-length", "content-type", "content-encoding", "transfer-encoding"}
)


class RedirectingSender:
    """Sends a request through ``transport`` and follows its redirects.

    Call it as httpx's transport API is called: the final response comes
    back with its body unread, for the caller to read as much as it wants.
    Each hop goes through the transport, so the target policy's address
    checks apply to every hop; the URL checks are applied here.
    """

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        *,
        policy: TargetPolicy,
        max_redirects: int = MAX_REDIRECTS,
    ) -> None:
        self._transport = transport
        self._policy = policy
        self._max_redirects = max_redirects

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        for _ in range(self._max_redirects + 1):
            response = await self._transport.handle_async_request(request)
            following = next_request(request, response)
            if following is None:
                return response
            # Unread: the transport closes the connection rather than drain it.
            await response.aclose()
            reason = check_url(str(following.url), self._policy)
            if reason is not None:
                raise BlockedDestinationError(f"redirect refused: {reason}")
            request = following
        raise httpx.TooManyRedirects(f"more than {self._max_redirects} redirects")


def next_request(request: httpx.Request, response: httpx.Response) -> httpx.Request | None:
    """The request a redirect asks for, or None when ``response`` is not one."""
    location = response.headers.get("location")
    if response.status_code not in REDIRECT_CODES or location is None:
        return None
    try:
        url = request.url.join(location)
    except httpx.InvalidURL as exc:
        raise httpx.UnsupportedProtocol(f"redirect to an invalid URL: {exc}") from None
    if url.scheme not in ("http", "https"):
        raise httpx.UnsupportedProtocol(f"redirect to an unsupported scheme '{url.scheme}'")
    method = _redirect_method(request.method, response.status_code)
    same_origin = _origin(url) == _origin(request.url)
    headers = [
        (name, value)
        for name, value in request.headers.multi_items()
        if name.lower() != "host"
        and (same_origin or name.lower() in OWN_HEADERS)
        and (method == request.method or name.lower() not in _BODY_HEADERS)
    ]
    content = request.content if method == request.method else None
    return httpx.Request(
        method, url, headers=headers, content=content, extensions=request.extensions
    )


def _redirect_method(method: str, status_code: int) -> str:
    if status_code == 303 and method != "HEAD":
        return "GET"
    if status_code in (301, 302) and method == "POST":
        return "GET"
    return method


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    default_port = {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host, url.port or default_port
