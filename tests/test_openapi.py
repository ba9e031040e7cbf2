"""The OpenAPI document, and schemathesis against a running server: no 5xx, answers match it."""
from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from sca_progress.server.openapi import openapi

from .conftest import RUN_PREFIX
from .procs import start_service, stop_service

schema = schemathesis.openapi.from_dict(openapi()).exclude(path="/events/{key}")  # an endless stream


@pytest.fixture(scope="module")
def service_url(redis_url):
    proc, base, _ = start_service(["--redis-url", redis_url, "--prefix", f"{RUN_PREFIX}-openapi-{os.urandom(4).hex()}"])
    yield base
    stop_service(proc)


def test_the_document_is_served(service_url):
    import urllib.request

    import orjson

    with urllib.request.urlopen(f"{service_url}/openapi.json") as resp:
        doc = orjson.loads(resp.read())
    assert doc["openapi"].startswith("3.") and "/status/{key}" in doc["paths"]


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms(case, service_url):
    case.call_and_validate(base_url=service_url, checks=[
        not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance])
