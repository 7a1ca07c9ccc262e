"""Schema fuzzing: schemathesis against the api's own /openapi.json, on the real database.

Acceptance: no input gives a 5xx, and every answer conforms to the schema
(status code, content type, headers, body). Positive and negative inputs,
a bounded number of examples per operation, and a stateful run that
follows the create answer's links (get, reschedule, cancel).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.transport import Response
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ensure_resource_availability,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.engine import URL

from tests.support.databases import fresh_database
from timer_controller.api.app import create_app
from timer_controller.api.validation import TimerRules
from timer_controller.db.timers import TimerStore
from timer_controller.delivery.policy import TargetPolicy

TOKEN = "schema-fuzz-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Bounded: the whole module stays well under a minute on the 2-core machine.
EXAMPLES_PER_OPERATION = 40
STATEFUL_EXAMPLES = 15
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
]
# After a create, the timer it names must be there to get.
STATEFUL_CHECKS = [*CHECKS, ensure_resource_availability]
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)

pytestmark = pytest.mark.db


@pytest.fixture(scope="module")
def api_schema(db_server: URL) -> Iterator[Any]:
    with fresh_database(db_server) as database:
        # Private networks blocked, so the fuzzer meets that refusal too.
        rules = TimerRules(policy=TargetPolicy(block_private_networks=True))
        app = create_app(store=TimerStore(database.engine), tokens=[TOKEN], rules=rules)
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        schema.config.generation.update(
            modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
            max_examples=EXAMPLES_PER_OPERATION,
        )
        yield schema


OPERATIONS = [
    ("POST", "/v1/timers"),
    ("POST", "/v1/timers/batch"),
    ("GET", "/v1/timers"),
    ("GET", "/v1/timers/{timer_id}"),
    ("PATCH", "/v1/timers/{timer_id}"),
    ("DELETE", "/v1/timers/{timer_id}"),
]


def test_every_operation_is_fuzzed(api_schema: Any) -> None:
    found = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}

    assert found == set(OPERATIONS)


# Cases are drawn from the operations' strategies rather than through the pytest
# plugin's lazy fixture, which the pinned pytest range does not support.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_no_input_gives_a_5xx_and_every_answer_conforms(
    api_schema: Any, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @FUZZ_SETTINGS
    def fuzz(case: Case[Any]) -> None:
        case.call_and_validate(headers=AUTH, checks=CHECKS)

    fuzz()


def test_sequences_of_calls_conform(api_schema: Any) -> None:
    base = api_schema.as_state_machine()

    class Timers(base):  # type: ignore[misc, valid-type]
        def get_call_kwargs(self, case: Case[Any]) -> dict[str, Any]:
            return {"headers": AUTH}

        def validate_response(
            self,
            response: Response,
            case: Case[Any],
            additional_checks: Any = None,
            **kwargs: Any,
        ) -> None:
            case.validate_response(response, checks=STATEFUL_CHECKS, headers=AUTH)

    Timers.run(
        settings=settings(
            max_examples=STATEFUL_EXAMPLES,
            stateful_step_count=6,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
    )
