"""The OpenAPI schema (/api/schema/) and its rendered docs (/api/docs/)."""

from io import StringIO

import pytest
import yaml
from django.core.management import call_command

API_PATHS = {
    "/api/auth/token/": {"post"},
    "/api/auth/token/refresh/": {"post"},
    "/api/auth/user-token/": {"post"},
    "/api/recipients/{external_id}/": {"get", "put", "delete"},
    "/api/me/": {"get"},
    "/api/notifications/": {"get", "post"},
    "/api/notifications/unread-count/": {"get"},
    "/api/notifications/read-all/": {"post"},
    "/api/notifications/{id}/": {"get", "delete"},
    "/api/notifications/{id}/read/": {"post"},
    "/api/notifications/{id}/unread/": {"post"},
}


@pytest.fixture
def schema(client, db):
    response = client.get("/api/schema/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi")
    return yaml.safe_load(response.content)


def test_the_schema_describes_every_endpoint(schema):
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "Inbox API"
    paths = {p.replace("{pk}", "{id}"): {m for m in ops if m in {"get", "post", "delete", "put", "patch"}} for p, ops in schema["paths"].items()}
    for path, methods in API_PATHS.items():
        assert path in paths, sorted(paths)
        assert methods <= paths[path], (path, paths[path])


def test_the_schema_documents_the_list_filters_and_the_idempotency_key(schema):
    list_params = {p["name"] for p in schema["paths"]["/api/notifications/"]["get"]["parameters"]}
    assert {"unread", "category", "after", "page_size", "cursor"} <= list_params
    send_params = {p["name"] for p in schema["paths"]["/api/notifications/"]["post"]["parameters"]}
    assert "Idempotency-Key" in send_params


def test_the_list_is_documented_as_a_cursor_page_of_notifications_or_of_groups(schema):
    ok = schema["paths"]["/api/notifications/"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    page = schema["components"]["schemas"][ok["$ref"].rsplit("/", 1)[-1]]
    assert {"next", "previous", "results"} <= set(page["properties"])
    entry = schema["components"]["schemas"][page["properties"]["results"]["items"]["$ref"].rsplit("/", 1)[-1]]
    # A notification, or with ?grouped=true one entry per group.
    assert sorted(one["$ref"].rsplit("/", 1)[-1] for one in entry["oneOf"]) == ["Notification", "NotificationGroupEntry"]
    operation_ids = [op["operationId"] for ops in schema["paths"].values() for op in ops.values() if isinstance(op, dict) and "operationId" in op]
    assert len(operation_ids) == len(set(operation_ids))


def test_the_schema_is_available_as_json(client, db):
    response = client.get("/api/schema/?format=json")
    assert response.status_code == 200
    assert "/api/notifications/" in response.json()["paths"]


def test_the_schema_generates_without_warnings_and_validates(db):
    out = StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", "--format", "openapi-json", stdout=out, stderr=StringIO())
    assert '"/api/notifications/"' in out.getvalue()


def test_the_docs_page_renders(client, db):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger" in html.lower()
    assert "/api/schema/" in html
