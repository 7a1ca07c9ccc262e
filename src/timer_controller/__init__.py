"""timer-controller: fires one-shot HTTP timers stored as rows in MySQL."""

__version__ = "0.1.0"
