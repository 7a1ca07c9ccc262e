"""How the api serves the dashboard: one router built from the app's own parts."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter, FastAPI
from sqlalchemy import Engine

from timer_controller.api.ui.routes import Dashboard, Wiring
from timer_controller.db.browse import TimerBrowser
from timer_controller.db.stats import StatsRepository


def ui_router(app: FastAPI, *, engine: Engine, tokens: Sequence[str]) -> APIRouter:
    """``/`` and ``/ui/…`` for ``app.include_router``.

    The store, the token check, the rules and the clock are the ones
    ``create_app`` put on ``app.state``: the dashboard's two writes and its
    login are the api's own.
    """
    state = app.state
    wiring = Wiring(
        tokens=tokens,
        accepts=state.auth.accepts,
        stats=StatsRepository(engine),
        browser=TimerBrowser(engine),
        store=state.store,
        max_horizon_s=state.rules.max_horizon_s,
        default_max_attempts=state.rules.default_max_attempts,
        clock=state.clock,
    )
    return Dashboard(wiring).router()
