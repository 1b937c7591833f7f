"""The service fuzzed against its own OpenAPI spec (schemathesis): no request, in the spec or off it, gets a 5xx.

The cases come from the spec of an app built here with the default limits; they are sent to `emocare serve`
(the same defaults, the tiny trained bundle) on a loopback port, which must publish that same spec. At most 50
cases per operation and media type, each within a 5 s deadline.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from test_serve import start_server

from emocare.serving.app import create_app

# Built from the spec up front: schemathesis's lazy loading from a fixture does not run under pytest 9.
SPEC = create_app(None).openapi()  # the spec needs no model
schema = schemathesis.openapi.from_dict(SPEC)


@pytest.fixture(scope="module")
def live_url(trained_bundle: Path, tmp_path_factory) -> str:
    proc, url = start_server(trained_bundle, tmp_path_factory.mktemp("fuzz-tmp"))
    try:
        assert httpx.get(f"{url}/openapi.json").json() == SPEC
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@schema.parametrize()
@settings(max_examples=50, deadline=5000, database=None,  # no .hypothesis/ folder left in the checkout
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_no_request_gets_a_server_error(case, live_url: str):
    case.call_and_validate(base_url=live_url, checks=[not_a_server_error], timeout=30)
