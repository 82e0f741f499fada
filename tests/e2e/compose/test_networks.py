"""The compose networks (issue 30, item 2), on the running stack: the internet-facing api-server reaches
no Docker engine (docker-proxy's API is root on everything it runs), nor Redis or the registry (the celery
profile: tests/e2e/compose/test_celery.py checks them too, with their logins), by name or by address; it
still does its work (its health endpoint here; the upload page's upload in test_stack.py), and the
scheduler still reaches docker-proxy (every lecture test_stack.py runs goes through it).

Runs with ``KONSPEKT_COMPOSE_E2E=1`` (.ci/compose-e2e.sh), as root.
"""

from __future__ import annotations

import json
import os
import urllib.request

import pytest
from compose_stack import reach, stack, unreachable_from  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.environ.get("KONSPEKT_COMPOSE_E2E") != "1",
                                 reason="runs against the compose stack: .ci/compose-e2e.sh (make compose-e2e)")]

ENGINE_BROKER_REGISTRY = {"docker-proxy": 2375, "redis": 6379, "registry": 5000}


def test_the_api_server_reaches_no_engine_broker_or_registry(stack):
    assert unreachable_from("airflow-apiserver", ENGINE_BROKER_REGISTRY) == {}
    seen = reach("airflow-apiserver", "docker-proxy:2375", "postgres:5432")
    assert seen["docker-proxy:2375"] == "unresolved"  # not even its name: no network in common
    assert seen["postgres:5432"] == "open"  # the probe itself works: its database is there
    # the other components that start no task reach no engine either
    for service in ("airflow-triggerer", "airflow-dag-processor"):
        assert unreachable_from(service, {"docker-proxy": 2375}) == {}, service


def test_the_api_server_still_answers_and_the_scheduler_still_reaches_docker_proxy(stack):
    with urllib.request.urlopen(stack["url"] + "/api/v2/monitor/health", timeout=30) as resp:
        health = json.loads(resp.read())
    assert health["metadatabase"]["status"] == "healthy", health
    assert reach("airflow-scheduler", "docker-proxy:2375")["docker-proxy:2375"] == "open"
