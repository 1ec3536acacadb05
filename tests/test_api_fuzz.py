"""Schema-driven fuzzing of the admin API: no 5xx, every answer matches the OpenAPI document."""

import socket

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from ks.app import create_app
from ks.records import migrate

from helpers import free_port

# The event stream never ends (tests/test_events_out.py tests it); every other route is fuzzed.
schema = schemathesis.pytest.from_fixture("api_schema").exclude(path="/events")


@pytest.fixture
def app(root, database_url):
    # Any BMC the fuzzer sets is pointed at a closed loopback port (below), so a
    # power call fails fast and no traffic leaves this machine.
    app = create_app(
        {"ROOT": str(root), "DATABASE_URL": database_url, "POWER_TIMEOUT": 0.3, "POWER_STATUS_TIMEOUT": 0.3}
    )
    migrate.upgrade(app.extensions["kiwispray"].db)
    yield app
    app.extensions["kiwispray"].db.dispose()


@pytest.fixture
def api_schema(app):
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)


@pytest.fixture(scope="module")
def closed_port():
    return free_port(socket.SOCK_DGRAM)


# What the API promises: never a 5xx, only documented statuses, and every answer in the
# documented shape. (Whether a well-formed request is also accepted depends on the site,
# e.g. which images exist, which no schema can say.)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_answers_match_the_schema(case, hosts, token, closed_port):
    if isinstance(case.body, dict) and isinstance(case.body.get("bmc"), dict):
        case.body["bmc"]["address"] = f"ipmi://127.0.0.1:{closed_port}"
    case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)
