"""
Tokens the product signs itself (INBOX["TRUSTED_ISSUERS"]): HS256, RS256, ES256 and a JWKS file,
with keys made here by cryptography, on the real REST API. A good token opens the inbox of the
recipient its ``sub`` names (created on their first token); every bad one is a 401 and stores
nothing, no recipient account included.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from rest_framework.test import APIClient

from inbox import services, trusted_issuers
from inbox.models import ExternalRecipient
from tests import services as ext

pytestmark = pytest.mark.django_db

HS_ISS = "https://hs.product.example"
RS_ISS = "https://rs.product.example"
ES_ISS = "https://es.product.example"
JWKS_ISS = "https://jwks.product.example"
AUD_ISS = "https://aud.product.example"
AUDIENCE = "inbox"
SECRET = "a-shared-secret-of-the-product-at-least-32-bytes-long"


# --- Keys and tokens, as a product makes them ---------------------------------------------------


def public_pem(private_key) -> str:
    return private_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def private_pem(private_key) -> str:
    return private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


def public_jwk(private_key, alg: str, kid: str) -> dict:
    algorithm = jwt.get_algorithm_by_name(alg)
    return {**algorithm.to_jwk(private_key.public_key(), as_dict=True), "kid": kid, "alg": alg, "use": "sig"}


class Keys:
    """The keys of the product's issuers, made once per test module (an RSA key takes a moment)."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.rsa_other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.ec_other = ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


def issuers_config(keys: Keys, jwks_path) -> list[dict]:
    jwks_path.write_text(json.dumps({"keys": [public_jwk(keys.rsa_other, "RS256", "old"), public_jwk(keys.rsa, "RS256", "current")]}))
    return [
        {"iss": HS_ISS, "alg": "HS256", "secret": SECRET},
        {"iss": RS_ISS, "alg": "RS256", "public_key": public_pem(keys.rsa)},
        {"iss": ES_ISS, "alg": "ES256", "public_key": public_pem(keys.ec)},
        {"iss": JWKS_ISS, "alg": "RS256", "jwks_file": str(jwks_path)},
        {"iss": AUD_ISS, "alg": "HS256", "secret": SECRET, "aud": AUDIENCE},
    ]


@pytest.fixture
def trusted(settings, keys, tmp_path):
    """The service trusts the product's five issuers (the settings fixture re-parses them)."""
    settings.INBOX = {**getattr(settings, "INBOX", {}), "TRUSTED_ISSUERS": issuers_config(keys, tmp_path / "jwks.json")}
    return keys


def claims(iss: str = HS_ISS, sub="ext-42", lifetime: float = 300, **extra) -> dict:
    now = int(time.time())
    payload = {"iss": iss, "sub": sub, "iat": now, "exp": now + lifetime}
    payload.update(extra)
    return {k: v for k, v in payload.items() if v is not OMIT}


OMIT = object()


def sign(payload: dict, keys: Keys | None = None, *, alg: str | None = None, key=None, headers: dict | None = None) -> str:
    """A token as the product's issuer of ``payload["iss"]`` signs it (its own key unless ``key``)."""
    iss = payload.get("iss")
    if key is None:
        if iss == RS_ISS:
            key, alg = keys.rsa, alg or "RS256"
        elif iss == ES_ISS:
            key, alg = keys.ec, alg or "ES256"
        elif iss == JWKS_ISS:
            key, alg = keys.rsa, alg or "RS256"
            headers = {"kid": "current", **(headers or {})}
        else:
            key, alg = SECRET, alg or "HS256"
    return jwt.encode(payload, key, algorithm=alg or "HS256", headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_signed(header: dict, payload: dict, secret: bytes, digest=hashlib.sha256) -> str:
    """An HMAC signature over any header and payload, the way an attacker would make one (PyJWT refuses to)."""
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())
    return signing_input + "." + b64(hmac.new(secret, signing_input.encode(), digest).digest())


def bearer(token: str) -> APIClient:
    client = APIClient(raise_request_exception=False)  # a 500 comes back as a response, to be asserted against
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def stored_accounts() -> tuple[int, int]:
    return get_user_model().objects.count(), ExternalRecipient.objects.count()


# --- Good tokens ----------------------------------------------------------------------------------


@pytest.mark.parametrize("iss", [HS_ISS, RS_ISS, ES_ISS, JWKS_ISS], ids=["HS256", "RS256", "ES256", "jwks_file"])
def test_a_token_of_a_trusted_issuer_opens_the_inbox_of_the_recipient_its_sub_names(trusted, iss, service_account):
    client = bearer(sign(claims(iss, sub="customer-7"), trusted))

    me = client.get("/api/me/")
    assert me.status_code == 200, me.content
    recipient = ExternalRecipient.objects.get(external_id="customer-7")
    assert me.json()["id"] == recipient.user_id
    assert me.json()["can_send"] is False

    services.notification_create(recipients=[recipient.user], title="Your order shipped", sender=service_account)
    listed = client.get("/api/notifications/")
    assert listed.status_code == 200
    assert [n["title"] for n in listed.json()["results"]] == ["Your order shipped"]


def test_the_recipient_is_created_once_and_its_profile_follows_the_email_and_name_claims(trusted):
    first = bearer(sign(claims(sub="u-1", email="ada@example.com", name="Ada"), trusted))
    assert first.get("/api/me/").status_code == 200
    again = bearer(sign(claims(sub="u-1", email="ada@lovelace.example", jti="second"), trusted))
    assert again.get("/api/me/").status_code == 200

    recipient = ExternalRecipient.objects.get(external_id="u-1")
    assert (recipient.email, recipient.name) == ("ada@lovelace.example", "Ada")
    assert ExternalRecipient.objects.count() == 1


def test_a_token_with_the_configured_audience_is_accepted(trusted):
    assert bearer(sign(claims(AUD_ISS, aud=AUDIENCE))).get("/api/me/").status_code == 200
    assert bearer(sign(claims(AUD_ISS, aud=["another-service", AUDIENCE]))).get("/api/me/").status_code == 200


def test_the_jwks_kid_selects_the_key_so_a_token_of_the_older_key_still_works(trusted):
    token = sign(claims(JWKS_ISS), key=trusted.rsa_other, alg="RS256", headers={"kid": "old"})
    assert bearer(token).get("/api/me/").status_code == 200


def test_inboxs_own_tokens_still_work_beside_trusted_issuers(trusted, alice, client_for):
    assert client_for(alice).get("/api/me/").json()["username"] == "alice"


# --- Bad tokens: a 401 and nothing stored ----------------------------------------------------------


def _bad_tokens(keys: Keys) -> dict[str, str]:
    rs_public = public_pem(keys.rsa).encode()
    return {
        "untrusted issuer": sign(claims("https://evil.example")),
        "issuer of another case": sign({**claims(HS_ISS), "iss": HS_ISS.upper()}),
        "iss not a string": hand_signed({"alg": "HS256"}, {**claims(), "iss": 5}, SECRET.encode()),
        "wrong HS256 secret": sign(claims(HS_ISS), key="another-secret-also-at-least-32-bytes-long!!"),
        "RS256 signed by another key": sign(claims(RS_ISS), key=keys.rsa_other, alg="RS256"),
        "ES256 signed by another key": sign(claims(ES_ISS), key=keys.ec_other, alg="ES256"),
        "alg none": jwt.encode(claims(HS_ISS), None, algorithm="none"),
        "alg none, no signature": b64(b'{"alg":"none","typ":"JWT"}') + "." + b64(json.dumps(claims(HS_ISS)).encode()) + ".",
        "HS512 instead of HS256": hand_signed({"alg": "HS512"}, claims(HS_ISS), SECRET.encode(), hashlib.sha512),
        "RS256 public key used as an HMAC secret": hand_signed({"alg": "HS256", "typ": "JWT"}, claims(RS_ISS), rs_public),
        "ES256 token for the RS256 issuer": sign(claims(RS_ISS), key=keys.ec, alg="ES256"),
        "expired": sign(claims(lifetime=-1)),
        "expired an hour ago": sign(claims(lifetime=-3600)),
        "missing exp": sign(claims(exp=OMIT)),
        "exp a string": sign(claims(exp="tomorrow")),
        "exp a numeric string": sign(claims(exp=str(int(time.time()) + 300))),
        "exp true": sign(claims(exp=True)),
        "exp past year 9999": sign(claims(exp=1e30)),
        "nbf in the future": sign(claims(nbf=int(time.time()) + 3600)),
        "nbf a string": sign(claims(nbf="now")),
        "iat in the future": sign(claims(iat=int(time.time()) + 3600)),
        "sub missing": sign(claims(sub=OMIT)),
        "sub a number": sign(claims(sub=42)),
        "sub empty": sign(claims(sub="")),
        "sub too long": sign(claims(sub="x" * 256)),
        "sub with NUL": sign(claims(sub="a\x00b")),
        "sub a list": hand_signed({"alg": "HS256"}, claims(sub=["a"]), SECRET.encode()),
        "email not an address": sign(claims(email="not-an-address")),
        "email a number": sign(claims(email=5)),
        "name a list": sign(claims(name=["Ada"])),
        "name too long": sign(claims(name="n" * 256)),
        "aud when none is configured": sign(claims(HS_ISS, aud="inbox")),
        "wrong audience": sign(claims(AUD_ISS, aud="billing")),
        "missing audience": sign(claims(AUD_ISS)),
        "audience a number": sign(claims(AUD_ISS, aud=5)),
        "unknown kid": sign(claims(JWKS_ISS), keys, headers={"kid": "rotated-away"}),
        "no kid, several keys": jwt.encode(claims(JWKS_ISS), keys.rsa, algorithm="RS256"),
        "kid a number": hand_signed({"alg": "HS256", "kid": 7}, claims(HS_ISS), SECRET.encode()),
        "payload a list": b64(b'{"alg":"HS256"}') + "." + b64(b"[1]") + "." + b64(b"sig"),
        "too long": sign(claims(padding="p" * 9000)),
    }


BAD_TOKEN_NAMES = [
    "untrusted issuer", "issuer of another case", "iss not a string", "wrong HS256 secret", "RS256 signed by another key",
    "ES256 signed by another key", "alg none", "alg none, no signature", "HS512 instead of HS256",
    "RS256 public key used as an HMAC secret", "ES256 token for the RS256 issuer", "expired", "expired an hour ago",
    "missing exp", "exp a string", "exp a numeric string", "exp true", "exp past year 9999", "nbf in the future",
    "nbf a string", "iat in the future", "sub missing", "sub a number", "sub empty", "sub too long", "sub with NUL",
    "sub a list", "email not an address", "email a number", "name a list", "name too long",
    "aud when none is configured", "wrong audience", "missing audience", "audience a number", "unknown kid",
    "no kid, several keys", "kid a number", "payload a list", "too long",
]


@pytest.mark.parametrize("bad_case", BAD_TOKEN_NAMES)
def test_a_bad_token_is_a_401_and_creates_no_recipient(trusted, bad_case):
    token = _bad_tokens(trusted)[bad_case]
    before = stored_accounts()

    response = bearer(token).get("/api/me/")

    assert response.status_code == 401, (bad_case, response.content)
    assert response.json()["code"] == "token_not_valid"
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert stored_accounts() == before


def test_a_bad_token_says_why(trusted):
    detail = lambda token: bearer(token).get("/api/me/").json()["detail"]  # noqa: E731
    assert "not trusted" in detail(sign(claims("https://evil.example")))
    assert "expired" in detail(sign(claims(lifetime=-5)))
    assert "'exp'" in detail(sign(claims(exp=OMIT)))
    assert "NumericDate" in detail(sign(claims(exp="tomorrow")))
    assert "NumericDate" in detail(sign(claims(nbf="now")))
    assert "signature" in detail(sign(claims(RS_ISS), key=trusted.rsa_other, alg="RS256"))
    assert "signed with RS256" in detail(jwt.encode(claims(RS_ISS), None, algorithm="none"))
    assert "audience" in detail(sign(claims(AUD_ISS, aud="billing")))
    assert "sub" in detail(sign(claims(sub=42)))


def test_an_inbox_token_naming_an_untrusted_issuer_is_a_401(trusted, alice, token_for):
    # Signed with Inbox's own key, for a real user: an iss Inbox does not know is still refused.
    response = bearer(token_for(alice, iss="https://evil.example")).get("/api/me/")
    assert response.status_code == 401


def test_a_remembered_token_is_refused_once_it_expires(trusted):
    token = sign(claims(sub="short-lived", lifetime=2))
    assert bearer(token).get("/api/me/").status_code == 200
    time.sleep(max(0.0, jwt.decode(token, options={"verify_signature": False})["exp"] - time.time()) + 0.05)
    assert bearer(token).get("/api/me/").status_code == 401


def test_a_revoked_or_deactivated_recipient_is_refused_even_with_a_remembered_token(trusted):
    token = sign(claims(sub="leaver"), trusted)
    assert bearer(token).get("/api/me/").status_code == 200
    recipient = ExternalRecipient.objects.get(external_id="leaver")
    services.credentials_revoke(user_id=recipient.user_id)
    assert bearer(token).get("/api/me/").status_code == 401
    # A new token after the revocation works: the product is the authority on who may sign in.
    assert bearer(sign(claims(sub="leaver", jti="new"), trusted)).get("/api/me/").status_code == 200
    get_user_model().objects.filter(pk=recipient.user_id).update(is_active=False)
    services.credentials_revoke(user_id=recipient.user_id)
    assert bearer(sign(claims(sub="leaver", jti="newer"), trusted)).get("/api/me/").status_code == 401


def test_an_issuer_removed_from_the_settings_is_no_longer_trusted_even_for_a_remembered_token(trusted, settings):
    token = sign(claims(sub="ext-9"))
    assert bearer(token).get("/api/me/").status_code == 200
    settings.INBOX = {**settings.INBOX, "TRUSTED_ISSUERS": []}
    assert bearer(token).get("/api/me/").status_code == 401


# --- The configuration ---------------------------------------------------------------------------------


def _configured(settings, *entries):
    settings.INBOX = {**getattr(settings, "INBOX", {}), "TRUSTED_ISSUERS": list(entries)}
    return trusted_issuers.issuers()


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"iss": "x", "alg": "none", "secret": SECRET}, "'alg' must be one of HS256, RS256, ES256"),
        ({"iss": "x", "alg": "HS384", "secret": SECRET}, "'alg' must be one of"),
        ({"iss": "x", "alg": "HS256"}, "exactly one of"),
        ({"iss": "x", "alg": "HS256", "secret": SECRET, "jwks_file": "/x"}, "exactly one of"),
        ({"iss": "x", "alg": "HS256", "secret": "short"}, "at least 32 bytes"),
        ({"iss": "x", "alg": "RS256", "secret": SECRET}, "'secret' is for HS256"),
        ({"iss": "x", "alg": "RS256", "public_key": "not a pem"}, "PEM public key"),
        ({"iss": "x", "alg": "RS256", "jwks_file": "/nonexistent/jwks.json"}, "cannot be read"),
        ({"alg": "HS256", "secret": SECRET}, "'iss' must be a non-empty string"),
        ({"iss": "x", "alg": "HS256", "secret": SECRET, "audience": "inbox"}, "unknown key(s) 'audience'"),
        ({"iss": "x", "alg": "HS256", "secret": SECRET, "aud": []}, "'aud' must be"),
        ("https://issuer.example", "must be an object"),
    ],
)
def test_a_bad_issuer_entry_is_improperly_configured_with_a_clear_message(settings, entry, message):
    with pytest.raises(ImproperlyConfigured) as raised:
        _configured(settings, entry)
    assert message in str(raised.value)
    assert "INBOX['TRUSTED_ISSUERS'][0]" in str(raised.value)


def test_keys_of_the_wrong_kind_are_improperly_configured(settings, keys, tmp_path):
    cases = [
        ({"iss": "x", "alg": "RS256", "public_key": private_pem(keys.rsa)}, "private key"),
        ({"iss": "x", "alg": "ES256", "public_key": public_pem(keys.rsa)}, "not a usable ES256 public key"),
        ({"iss": "x", "alg": "RS256", "public_key": public_pem(keys.ec)}, "not a usable RS256 public key"),
        ({"iss": "x", "alg": "ES256", "public_key": public_pem(ec.generate_private_key(ec.SECP384R1()))}, "secp256r1"),
        ({"iss": "x", "alg": "RS256", "public_key": public_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024))}, "1024 bits"),
    ]
    for entry, message in cases:
        with pytest.raises(ImproperlyConfigured, match=message):
            _configured(settings, entry)


def test_a_bad_jwks_file_is_improperly_configured(settings, keys, tmp_path):
    path = tmp_path / "jwks.json"
    private = {**jwt.get_algorithm_by_name("RS256").to_jwk(keys.rsa, as_dict=True), "kid": "p"}
    cases = [
        ("{not json", "is not JSON"),
        (json.dumps([1]), "not a JWK Set"),
        (json.dumps({"keys": []}), "holds no RS256 signing key"),
        (json.dumps({"keys": [public_jwk(keys.ec, "ES256", "e")]}), "holds no RS256 signing key"),
        (json.dumps({"keys": [private]}), "private key"),
        (json.dumps({"keys": [public_jwk(keys.rsa, "RS256", "a"), public_jwk(keys.rsa_other, "RS256", "a")]}), "two keys"),
        (json.dumps({"keys": [{**public_jwk(keys.rsa, "RS256", "a"), "n": "!!"}]}), "not a usable RS256 key"),
    ]
    for text, message in cases:
        path.write_text(text)
        with pytest.raises(ImproperlyConfigured, match=message):
            _configured(settings, {"iss": "x", "alg": "RS256", "jwks_file": str(path)})


def test_a_jwks_file_keeps_only_the_keys_for_the_issuers_algorithm(settings, keys, tmp_path):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [public_jwk(keys.ec, "ES256", "ec"), {**public_jwk(keys.rsa, "RS256", "enc"), "use": "enc"}, public_jwk(keys.rsa, "RS256", "sig")]}))
    issuer = _configured(settings, {"iss": "x", "alg": "RS256", "jwks_file": str(path)})["x"]
    assert [kid for kid, _ in issuer.keys] == ["sig"]


def test_the_same_issuer_twice_is_improperly_configured(settings):
    with pytest.raises(ImproperlyConfigured, match="configured twice"):
        _configured(settings, {"iss": "x", "alg": "HS256", "secret": SECRET}, {"iss": "x", "alg": "HS256", "secret": SECRET + "!"})


def test_the_service_refuses_to_start_with_an_inbox_trusted_issuers_that_is_not_json():
    env = {"DJANGO_SETTINGS_MODULE": "notifications_site.settings", "INBOX_TRUSTED_ISSUERS": "[{'iss': 'x'}]", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], cwd=ext.ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "ImproperlyConfigured: INBOX_TRUSTED_ISSUERS is not valid JSON" in result.stderr


def test_inbox_trusted_issuers_from_the_environment_become_the_inbox_setting():
    entry = {"iss": HS_ISS, "alg": "HS256", "secret": SECRET}
    env = {"DJANGO_SETTINGS_MODULE": "notifications_site.settings", "INBOX_TRUSTED_ISSUERS": json.dumps([entry]), "PATH": "/usr/bin:/bin"}
    script = "import django; django.setup(); from inbox import trusted_issuers; print(sorted(trusted_issuers.issuers()))"
    result = subprocess.run([sys.executable, "-c", script], cwd=ext.ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str([HS_ISS])
