"""Exceptions that cross rooms: raised in one, handled in another.

Each carries one sentence a person can act on; none carries a driver type,
so the rooms that handle them never import a database or HTTP library.
"""

from __future__ import annotations


class ConfigError(Exception):
    """A setting is missing, invalid or in conflict; the message names the variable."""


class StartupError(Exception):
    """Start-up failed for a reason that is not the database (a port in use, say)."""


class StorageError(Exception):
    """A database operation failed; ``reason`` is short and safe to log.

    Raised only by ``db``: the driver's exception is its ``__cause__``.
    """

    def __init__(self, reason: str, *, code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        #: The MySQL/MariaDB error number, when the server or client gave one.
        self.code = code


class StorageUnavailable(StorageError):
    """The database cannot be reached, or has no connection free, now: worth trying again."""


class BadData(StorageError):
    """The server refused a value (out of range, an incorrect datetime…).

    A row's data is at fault, not the connection: never "database lost".
    """


class SchemaMissing(StorageError):
    """The database has no ``tasks`` table: it was never migrated."""


class DatabaseUnavailable(Exception):
    """The database stayed unreachable through every allowed try: the pod exits 1."""


class BrokerError(Exception):
    """The broker did not take or confirm a message, or the connection is gone.

    Raised only by ``broker``, so the loops handle broker faults without
    knowing the client library.
    """


class BrokerUnavailable(BrokerError):
    """The broker stayed unreachable through every start-up try: the process exits 1."""


class StoppedConnecting(Exception):
    """A stop signal came while start-up was still connecting: nothing started, exit 0."""
