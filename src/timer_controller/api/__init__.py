"""The timer HTTP API: FastAPI over the timer store (``db.timers``), never the runtime."""
