"""
Tokens signed with Inbox's own key whose claims are malformed: each is a 401, never a 500 and never
another user, on every endpoint that reads a token (the API's authentication and the refresh).

The issue's example, ``user_id: "ext-42"``, was a 500 before the identity change (simplejwt looked
the user up with ``User.objects.get(id="ext-42")``: a ValueError); ``directory.user_id_from_claim``
made it a 401. An ``exp`` past year 9999 still was a 500 (simplejwt's ``datetime.fromtimestamp``
raised OverflowError): it is a 401 now.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from django.conf import settings
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from inbox.models import ExternalRecipient

pytestmark = pytest.mark.django_db

OMIT = object()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(payload: dict) -> str:
    """A token signed with Inbox's own key (HS256), by hand: any claim, as anyone holding the key could make it."""
    body = json.dumps({k: v for k, v in payload.items() if v is not OMIT}).encode()
    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(body)
    key = settings.SIMPLE_JWT.get("SIGNING_KEY", settings.SECRET_KEY).encode()
    return signing_input + "." + b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())


def get_me(token: str):
    client = APIClient(raise_request_exception=False)  # a 500 comes back as a response, to be asserted against
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client.get("/api/me/")


def refresh(token: str):
    return APIClient(raise_request_exception=False).post("/api/auth/token/refresh/", {"refresh": token}, format="json")


MALFORMED = {
    # The user id claim: only an integer (or simplejwt's decimal string) names a user.
    "user_id the issue's ext-42": {"user_id": "ext-42"},
    "user_id a list": {"user_id": [1]},
    "user_id an object": {"user_id": {"id": 1}},
    "user_id a float": {"user_id": 1.0},
    "user_id a bool": {"user_id": True},
    "user_id huge": {"user_id": 10**30},
    "user_id past bigint": {"user_id": 2**63},
    "user_id negative": {"user_id": -1},
    "user_id empty": {"user_id": ""},
    "user_id null": {"user_id": None},
    "user_id missing": {"user_id": OMIT},
    "user_id with a sign": {"user_id": "+1"},
    "user_id with spaces": {"user_id": " 1"},
    "user_id in hex": {"user_id": "0x1"},
    "user_id in fullwidth digits": {"user_id": "\uff11"},
    "user_id with a NUL": {"user_id": "1\x00"},
    # The token version.
    "token_version a string": {"token_version": "0"},
    "token_version a float": {"token_version": 0.0},
    "token_version negative": {"token_version": -1},
    "token_version huge": {"token_version": 2**31},
    "token_version a list": {"token_version": [0]},
    "token_version null": {"token_version": None},
    "token_version a bool": {"token_version": False},
    # The registered claims.
    "exp a string": {"exp": "tomorrow"},
    "exp null": {"exp": None},
    "exp a list": {"exp": [2_000_000_000]},
    "exp missing": {"exp": OMIT},
    "exp past year 9999": {"exp": 1e30},
    "exp a huge integer": {"exp": 10**26},
    "exp far in the past": {"exp": -(10**26)},
    "iat a string": {"iat": "now"},
    "iat far in the future": {"iat": 1e30},
    "nbf a string": {"nbf": "now"},
    "nbf in the future": {"nbf": 4_000_000_000},
    "sub a number": {"sub": 42},
    "jti a list": {"jti": [1]},
    "jti missing": {"jti": OMIT},
    "token_type a number": {"token_type": 5},
    "token_type refresh": {"token_type": "refresh"},
    "token_type missing": {"token_type": OMIT},
    "iss untrusted": {"iss": "https://issuer.example"},
    "iss a number": {"iss": 5},
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_an_inbox_token_with_a_malformed_claim_is_a_401_and_never_a_500(alice, case):
    payload = {**AccessToken.for_user(alice).payload, **MALFORMED[case]}
    before = ExternalRecipient.objects.count()

    response = get_me(signed(payload))

    assert response.status_code == 401, (case, response.status_code, response.content[:200])
    assert response.json()["code"] in {"token_not_valid", "authentication_failed", "token_revoked"}
    assert ExternalRecipient.objects.count() == before  # a user id is never taken for an external id


@pytest.mark.parametrize("case", ["user_id the issue's ext-42", "user_id a list", "token_version a string", "exp past year 9999", "exp a huge integer", "exp a string", "iss untrusted"])
def test_a_refresh_token_with_a_malformed_claim_is_a_401_and_never_a_500(alice, case):
    payload = {**RefreshToken.for_user(alice).payload, **MALFORMED[case]}
    response = refresh(signed(payload))
    assert response.status_code == 401, (case, response.status_code, response.content[:200])


def test_the_same_token_with_good_claims_is_accepted(alice):
    # The cases above differ from this one only by the claim named: they fail for it alone.
    response = get_me(signed(dict(AccessToken.for_user(alice).payload)))
    assert response.status_code == 200
    assert response.json()["username"] == "alice"


def test_a_good_refresh_token_still_refreshes(alice):
    response = refresh(signed(dict(RefreshToken.for_user(alice).payload)))
    assert response.status_code == 200
    assert "access" in response.json()
