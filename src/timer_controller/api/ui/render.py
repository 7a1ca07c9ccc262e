"""Templates, static assets and the headers every dashboard response carries."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from fastapi.responses import HTMLResponse, Response

from timer_controller.api.ui import views
from timer_controller.api.ui.figures import format_ms

HERE = Path(__file__).parent
#: Everything the pages load comes from here: no CDN, no inline script.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str
    version: str


def load_assets() -> dict[str, Asset]:
    """The static files, read once; their hash versions their URLs."""
    assets = {}
    for path in sorted((HERE / "static").iterdir()):
        if path.suffix in _TYPES:
            body = path.read_bytes()
            version = hashlib.sha256(body).hexdigest()[:12]
            assets[path.name] = Asset(body=body, media_type=_TYPES[path.suffix], version=version)
    return assets


class Renderer:
    def __init__(self) -> None:
        self.assets = load_assets()
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,  # every template is HTML; row values are never trusted
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._env.globals.update(
            static=self.static_url,
            iso=views.iso,
            stamp=views.stamp,
            clock=views.clock,
            ago=views.ago,
            ms=format_ms,
        )

    def static_url(self, name: str) -> str:
        return f"/ui/static/{name}?v={self.assets[name].version}"

    def html(
        self, template: str, context: Mapping[str, Any], *, status_code: int = 200
    ) -> Response:
        defaults = {"title": "", "section": "", "csrf_token": None, "notice": None, "problem": None}
        body = self._env.get_template(template).render({**defaults, **context})
        return secured(HTMLResponse(body, status_code=status_code))

    def asset(self, name: str) -> Response:
        asset = self.assets.get(name)
        if asset is None:
            return secured(Response("not found", status_code=404, media_type="text/plain"))
        response = Response(asset.body, media_type=asset.media_type)
        # The URL carries the content's hash, so a year of caching is safe.
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        return secured(response)


def secured(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    response.headers.setdefault("Cache-Control", "no-store")
    return response
