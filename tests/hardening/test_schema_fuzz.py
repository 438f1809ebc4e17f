"""
The OpenAPI schema fuzzed with Schemathesis: every operation of /api/schema/, with data that fits
the schema and data that does not, as a user who may send and as one who may not. No response is
a 5xx, and every response (status code, content type, body) is the one the schema documents.

In process through the WSGI app, so it runs on SQLite and on PostgreSQL alike and stays fast.
Bounded: SCHEMA_FUZZ_EXAMPLES examples per operation, mode and user (default 15).
"""

from __future__ import annotations

import os
import time
from collections import Counter

import pytest
import schemathesis
from django.core.cache import caches
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from inbox.models import Notification

EXAMPLES = int(os.environ.get("SCHEMA_FUZZ_EXAMPLES", "15"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture
def wsgi_schema(db):
    """The schema loaded from the WSGI app; requests keep the test's connection (as Django's test client does)."""
    from django.core.signals import request_finished, request_started
    from django.core.wsgi import get_wsgi_application
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application())
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def identities(make_user, token_for):
    """Per identity: its token and the id of one of its own notifications."""
    sender = make_user("fuzz-sender", can_send=True)
    reader = make_user("fuzz-reader")
    make_user("alice")  # a recipient that the known-good sends name
    own = {}
    for user in (sender, reader):
        for i in range(3):
            own[user.pk] = Notification.objects.create(recipient=user, title=f"seed {i}", category="billing").pk
    return {
        "sender with the send permission": (token_for(sender), own[sender.pk]),
        "reader without it": (token_for(reader), own[reader.pk]),
    }


def known_good(label: str, own_id: int) -> list[dict]:
    """Requests that succeed, checked like the generated ones (random data rarely names a real user or id)."""
    method, path = label.split(" ", 1)
    id_param = {"path_parameters": {"id": own_id}}
    return {
        ("POST", "/api/notifications/"): [
            {"body": {"recipient": "alice", "title": "fuzz", "data": {"k": [1, "é"]}, "link": "https://example.com/x"}},
            {"body": {"recipients": ["alice"], "title": "fuzz bulk"}},
        ],
        ("GET", "/api/notifications/"): [{"query": {"after": 0, "page_size": 2}}, {"query": {"unread": "true", "category": "billing"}}],
        ("GET", "/api/notifications/{id}/"): [id_param],
        ("POST", "/api/notifications/{id}/read/"): [id_param],
        ("POST", "/api/notifications/{id}/unread/"): [id_param],
        ("POST", "/api/notifications/read-all/"): [{"body": {"category": "billing"}}],
        ("DELETE", "/api/notifications/{id}/"): [id_param],
    }.get((method, path), [])


def test_every_operation_fuzzed_answers_without_5xx_and_as_documented(wsgi_schema, identities, figures):
    caches["throttle"].clear()
    operations = [result.ok() for result in wsgi_schema.get_all_operations()]
    assert len(operations) >= 10
    statuses: Counter = Counter()
    calls = 0
    unsatisfiable: list[str] = []
    started = time.monotonic()
    for who, (token, own_id) in identities.items():
        auth = {"Authorization": f"Bearer {token}"}
        for operation in sorted(operations, key=lambda op: op.method == "delete"):  # deletes last
            for kwargs in known_good(operation.label, own_id):
                case = operation.Case(headers=auth, media_type="application/json" if "body" in kwargs else None, **kwargs)
                response = case.call()
                calls += 1
                statuses[(operation.label, response.status_code)] += 1
                case.validate_response(response, checks=CHECKS)
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @settings(
                    max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                    phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
                )
                @given(case=operation.as_strategy(mode, headers=auth))
                def fuzz(case):
                    nonlocal calls
                    response = case.call()
                    calls += 1
                    statuses[(operation.label, response.status_code)] += 1
                    case.validate_response(response, checks=CHECKS)

                try:
                    fuzz()
                except Unsatisfiable:
                    unsatisfiable.append(f"{operation.label} {mode.value}")  # nothing to make invalid (no parameters)
                except Exception as exc:
                    raise AssertionError(f"{operation.label} ({mode.value}, {who}): {exc}") from exc
    by_status = Counter()
    for (_, status), n in statuses.items():
        by_status[status] += n
    figures.update(
        operations=len(operations), requests=calls, examples_per_operation_mode_user=EXAMPLES,
        statuses={str(k): v for k, v in sorted(by_status.items())}, seconds=round(time.monotonic() - started, 1),
        checks=[c.__name__ for c in CHECKS], no_negative_cases_possible=sorted(set(unsatisfiable)),
    )
    assert not any(status >= 500 for status in by_status)
    assert by_status[201] > 0 and by_status[200] > 0, "the fuzzing reached successful sends and reads"
