"""
The order of the security schemes in the OpenAPI schema, which is the order Swagger UI's
*Authorize* dialog offers them: the bearer token first, then an API key if the API takes one, then
the admin's session cookie (drf-spectacular sorts them by name, which put the cookie first).
"""

import pytest
import yaml

from inbox.api.schema import order_security_schemes


@pytest.fixture
def schema(client, db):
    response = client.get("/api/schema/")
    assert response.status_code == 200
    return yaml.safe_load(response.content)


def kinds(schemes: dict) -> list[str]:
    """Each scheme as what a reader sees: bearer, header (an API key), cookie."""
    return ["bearer" if s.get("scheme") == "bearer" else s.get("in", s.get("type")) for s in schemes.values()]


def test_the_bearer_scheme_is_listed_first_and_the_cookie_last(schema):
    order = kinds(schema["components"]["securitySchemes"])
    assert order[0] == "bearer"
    assert order[-1] == "cookie"
    assert order in (["bearer", "cookie"], ["bearer", "header", "cookie"])


def test_each_operation_lists_its_schemes_in_the_same_order(schema):
    names = list(schema["components"]["securitySchemes"])
    checked = 0
    for operations in schema["paths"].values():
        for operation in operations.values():
            security = [name for requirement in operation.get("security", []) for name in requirement]
            if security:
                assert security == sorted(security, key=names.index)
                checked += 1
    assert checked >= 5


def test_the_order_holds_for_any_names_and_keeps_an_anonymous_requirement_last():
    result = {
        "components": {
            "securitySchemes": {
                "aCookie": {"type": "apiKey", "in": "cookie", "name": "sessionid"},
                "keys": {"type": "apiKey", "in": "header", "name": "Authorization"},
                "zBearer": {"type": "http", "scheme": "bearer"},
            }
        },
        "paths": {"/api/x/": {"get": {"security": [{}, {"aCookie": []}, {"keys": []}, {"zBearer": []}]}}},
    }
    order_security_schemes(result)
    assert list(result["components"]["securitySchemes"]) == ["zBearer", "keys", "aCookie"]
    assert result["paths"]["/api/x/"]["get"]["security"] == [{"zBearer": []}, {"keys": []}, {"aCookie": []}, {}]
