"""Property-based fuzzing of the whole HTTP contract with Schemathesis.

Requests are generated from the app's own OpenAPI schema, valid and invalid ones, and sent
in process (ASGI, no network) to the app over a real trained world. Whatever the input:
no 5xx, every 4xx is JSON with a ``detail``, every status and body is the documented one,
and no feed silently falls back to degraded mode.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

if os.environ.get("CI", "").lower() == "true":
    import schemathesis  # CI installs the dev extra: a missing fuzzer is an error there
else:
    schemathesis = pytest.importorskip(
        "schemathesis", reason="schemathesis is a dev dependency: pip install -e '.[dev]'"
    )

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.generation.meta import ParameterLocation, negated_parameters
from schemathesis.python import asgi as schemathesis_asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from recsys.api import create_app
from tests.api.helpers import API_KEYS, WRITE_KEY, World, bearer, copy_world

EXAMPLES = 1_500
MIN_CASES = 1_400
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _is_text(parameter: Any) -> bool:
    """A query parameter whose values are text (a string, or a list of strings)."""
    schema = parameter.definition.get("schema", {})
    options = schema.get("anyOf", [schema])
    return any(
        (option.get("type") == "string" and "enum" not in option)
        or (option.get("type") == "array" and option.get("items", {}).get("type") == "string")
        for option in options
    )


def checks_for(case: Any) -> list[Any]:
    """Invalid requests must be refused, except where "invalid" cannot survive the wire: a
    text query parameter given a value of the "wrong type" (a number, an object) receives
    it as text, which a text filter rightly takes. Every other negative case, a bad
    ``limit`` or ``kind`` included, must be refused."""
    text_queries = {p.name for p in case.operation.query if _is_text(p)}
    mutated_text = any(
        location == ParameterLocation.QUERY and name in text_queries
        for name, location in negated_parameters(case.meta)
    )
    return CHECKS if mutated_text else [*CHECKS, negative_data_rejection]


@pytest.fixture(scope="module")
def fuzz_world(trained_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    home = tmp_path_factory.mktemp("fuzz") / "home"
    opened = copy_world(trained_template, home, api_keys=API_KEYS)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def schema(fuzz_world: World) -> Iterator[Any]:
    app = create_app(fuzz_world.settings, fuzz_world.recommender)
    loaded = schemathesis.openapi.from_asgi("/openapi.json", app)
    # Every request carries a write key (the auth matrix is tested on its own), so the
    # Authorization header is not a parameter to fuzz.
    loaded.config.generation.update(with_security_parameters=False)
    # A negative case can also be over the body limit: 413 refuses it too.
    rejection = loaded.config.checks.negative_data_rejection
    rejection.expected_statuses = [*rejection.expected_statuses, "413"]
    yield loaded
    # Schemathesis keeps an app's lifespan running for the whole process; end ours here.
    schemathesis_asgi.shutdown_lifespans()


@pytest.mark.slow
def test_no_input_causes_a_server_error(schema: Any) -> None:
    calls: Counter[str] = Counter()
    refused_checked: Counter[str] = Counter()  # negative cases that had to be refused
    strategy = st.one_of(
        schema.as_strategy(generation_mode=GenerationMode.POSITIVE),
        schema.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )

    @seed(20_240_611)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )
    @given(case=strategy)
    def fuzz(case: Any) -> None:
        checks = checks_for(case)
        response = case.call_and_validate(headers=bearer(WRITE_KEY), checks=checks)
        calls[case.operation.label] += 1
        if case.meta.generation.mode.is_negative and negative_data_rejection in checks:
            refused_checked[case.operation.label] += 1
        status = response.status_code
        assert status < 500, case.as_curl_command()
        if 400 <= status < 500:
            assert response.headers["content-type"][0].startswith("application/json")
            body = response.json()
            assert isinstance(body.get("detail"), str) and body["detail"], body
        if status == 200 and case.operation.path == "/v1/users/{user_id}/feed":
            assert response.json()["degraded"] is False, case.as_curl_command()

    fuzz()
    assert sum(calls.values()) >= MIN_CASES, calls
    # Every operation was exercised, and every one that takes input, often.
    assert len(calls) == len(list(schema.get_all_operations())), calls
    without_input = {"GET /healthz", "GET /readyz", "GET /metrics", "GET /v1/experiments"}
    assert all(n >= 50 for label, n in calls.items() if label not in without_input), calls
    # Operations with query parameters are held to refusing invalid input too.
    for label in ("GET /v1/users/{user_id}/feed", "GET /v1/items/{item_id}/similar"):
        assert refused_checked[label] >= 10, refused_checked
