"""Shared fixtures: the database server, a fresh database per test, a receiver, a broker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from sqlalchemy.engine import URL

from tests.support.broker import TestBroker, unique_prefix
from tests.support.databases import TestDatabase, database_server, fresh_database
from tests.support.processes import Api, Controller, Receiver


@pytest.fixture(scope="session")
def db_server() -> Iterator[URL]:
    with database_server() as url:
        yield url


@pytest.fixture
def db(db_server: URL) -> Iterator[TestDatabase]:
    """A fresh database, migrated with the real Alembic scripts."""
    with fresh_database(db_server) as database:
        yield database


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver()
    try:
        yield started
    finally:
        started.stop()


P = TypeVar("P", bound=Controller)


def _processes(make: Callable[..., P]) -> Iterator[Callable[..., P]]:
    """A factory of processes made by ``make``; every one is stopped after the test."""
    started: list[P] = []

    def start(*args: Any) -> P:
        proc = make(*args)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def controllers() -> Iterator[Callable[..., Controller]]:
    """``timer-controller`` processes: ``controllers(env, *args)``."""
    yield from _processes(Controller)


@pytest.fixture
def amqp() -> Iterator[TestBroker]:
    """Queues under a prefix of this test's own, declared now and deleted afterwards."""
    broker = TestBroker(unique_prefix())
    broker.declare()
    try:
        yield broker
    finally:
        broker.delete()


@pytest.fixture
def workers() -> Iterator[Callable[..., Controller]]:
    """``timer-controller worker`` processes: ``workers(env)``."""
    yield from _processes(lambda env: Controller(env, "worker"))


@pytest.fixture
def apis() -> Iterator[Callable[..., Api]]:
    """``timer-controller api`` processes: ``apis(env, *args)``."""
    yield from _processes(Api)
