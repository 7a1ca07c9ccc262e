"""Unknown query parameters are refused, not ignored.

A typo in a filter (``?stauts=failed``) would otherwise answer every timer
as if no filter had been asked for. Each route's own query parameters are
read from FastAPI's route description, so nothing here lists them again.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute


def _query_names(dependant: Dependant) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def _declared(route: object) -> frozenset[str]:
    if not isinstance(route, APIRoute):
        return frozenset()
    return frozenset(_query_names(route.dependant))


async def known_query_only(request: Request) -> None:
    """A dependency: 422 naming each query parameter the route does not take."""
    declared = _declared(request.scope.get("route"))
    unknown = [name for name in request.query_params if name not in declared]
    if unknown:
        allowed = ", ".join(sorted(declared)) or "none"
        raise RequestValidationError(
            [
                {
                    "type": "extra_forbidden",
                    "loc": ("query", name),
                    "msg": f"unknown query parameter {name!r} (this route takes: {allowed})",
                    "input": request.query_params.get(name),
                }
                for name in unknown
            ]
        )
