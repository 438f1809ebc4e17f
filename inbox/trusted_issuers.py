"""
Tokens the product signs itself: ``INBOX["TRUSTED_ISSUERS"]``.

A product whose users already sign in with it should not have to share Inbox's secret key, nor ask
Inbox for a token per user: it signs a short JWT for the person (``sub``: its own id for them) with
its own key, and Inbox accepts it when the issuer (``iss``) is configured here. The person is then
the recipient that external id names (inbox.services.recipient_ensure: created on their first
token, their profile kept from the optional ``email`` and ``name`` claims).

The configuration is a list of issuers, each ``{"iss", "alg", "secret" | "public_key" |
"jwks_file", "aud"?}``, parsed and checked once (an ImproperlyConfigured naming the entry for a bad
one) and parsed again when the INBOX setting changes. Each issuer has exactly one algorithm, HS256,
RS256 or ES256: a token whose header names another (``none`` included) is refused before any key
is touched, so an RS256 public key can never be used as an HMAC secret (RFC 8725, section 2.1).

What a token must carry: a signature by the issuer's key (``kid`` picks the key of a JWKS),
``iss`` equal to the issuer, ``exp`` (required; an expired token is refused at once, ``exp`` has no
leeway), ``nbf`` and ``iat`` when present (LEEWAY_SECONDS of clock skew), ``aud`` equal to one of
the configured audiences when ``aud`` is configured, and *no* ``aud`` when it is not (a token
addressed to another service is not for Inbox; RFC 7519, section 4.1.3), ``sub`` an external id (a
string of 1 to 255 characters without NUL), ``email`` and ``name`` strings when present. Any other claim is ignored. Every refusal is an InvalidTrustedToken whose message is safe
to show the client; nothing is stored for a refused token.

Verified tokens are remembered until their ``exp`` (the same bytes give the same answer until
then), with the recipient they name and the recipient's token version at the first verification:
a revocation of that recipient's tokens (inbox.services.credentials_revoke, a deactivation, an
erasure) refuses them like any other token of theirs.
"""

from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.signals import setting_changed
from django.core.validators import validate_email
from django.dispatch import receiver
from jwt.exceptions import InvalidSubjectError

from . import directory
from .conf import inbox_setting
from .services.recipients import InvalidExternalId, external_id_check, recipient_ensure

ALGORITHMS = ("HS256", "RS256", "ES256")
KEY_KINDS = ("secret", "public_key", "jwks_file")
CONFIG_KEYS = {"iss", "alg", "aud", *KEY_KINDS}
#: Clock skew allowed for ``nbf`` and ``iat`` (a host clock a little ahead of ours). Not for ``exp``.
LEEWAY_SECONDS = 30
#: Longer tokens are refused unread (a JWT of a few claims is well under 1 KiB).
MAX_TOKEN_LENGTH = 8192
#: RFC 7518, section 3.2: an HS256 key is at least as long as the hash, 32 bytes.
MIN_SECRET_BYTES = 32
MIN_RSA_BITS = 2048
#: The last second of year 9999: a later ``exp`` is not a date any clock of ours can compare.
MAX_NUMERIC_DATE = 253_402_300_799
MAX_EMAIL_LENGTH = 254
MAX_NAME_LENGTH = 255
_KTY = {"HS256": "oct", "RS256": "RSA", "ES256": "EC"}


class InvalidTrustedToken(Exception):
    """A token naming a trusted issuer that is refused; the message says why and is safe to show."""


class UntrustedIssuer(InvalidTrustedToken):
    """The token's ``iss`` names no configured issuer."""


@dataclass(frozen=True)
class TrustedIssuer:
    iss: str
    alg: str
    audience: tuple[str, ...] | None
    #: (kid or None, the prepared key). One entry for ``secret``/``public_key``; a JWKS' usable keys.
    keys: tuple[tuple[str | None, Any], ...]

    def key_for(self, kid) -> Any:
        """The key a token header's ``kid`` selects; the only key when there is one and no kid."""
        if kid is not None and type(kid) is not str:
            raise InvalidTrustedToken("The token's kid header must be a string.")
        if len(self.keys) == 1 and (kid is None or self.keys[0][0] in (None, kid)):
            return self.keys[0][1]
        if kid is None:
            raise InvalidTrustedToken("The token has no kid header, and its issuer has several keys.")
        for key_id, key in self.keys:
            if key_id == kid:
                return key
        raise InvalidTrustedToken("The token's kid names no key of its issuer.")


@dataclass(frozen=True)
class TrustedClaims:
    """What a verified token says: its issuer, the external id, its expiry, the profile it carries."""

    iss: str
    external_id: str
    exp: float
    email: str | None
    name: str | None
    payload: dict = field(repr=False, compare=False)


@dataclass(frozen=True)
class TrustedToken:
    """A verified token with the recipient it names (``user_id``) and their token version then."""

    claims: TrustedClaims
    user_id: Any
    token_version: int

    @property
    def payload(self) -> dict:
        return self.claims.payload

    def get(self, name, default=None):
        return self.claims.payload.get(name, default)

    def __getitem__(self, name):
        return self.claims.payload[name]


# --- The configuration ------------------------------------------------------------------------



@functools.cache
def issuers() -> dict[str, TrustedIssuer]:
    """The configured issuers by ``iss``, parsed and checked once; ImproperlyConfigured for a bad entry."""
    configured = inbox_setting("TRUSTED_ISSUERS")
    if configured is None:
        return {}
    if not isinstance(configured, (list, tuple)):
        raise ImproperlyConfigured("INBOX['TRUSTED_ISSUERS'] must be a list of issuers, each {\"iss\", \"alg\", \"secret\" | \"public_key\" | \"jwks_file\", \"aud\"?}.")
    found: dict[str, TrustedIssuer] = {}
    for index, entry in enumerate(configured):
        issuer = parse_issuer(entry, where=f"INBOX['TRUSTED_ISSUERS'][{index}]")
        if issuer.iss in found:
            raise ImproperlyConfigured(f"INBOX['TRUSTED_ISSUERS'][{index}]: the issuer {issuer.iss!r} is configured twice.")
        found[issuer.iss] = issuer
    return found


def check_configuration() -> None:
    """Parse the configuration now (at start-up), so a bad entry stops the process instead of a request."""
    issuers()


def parse_issuer(entry, *, where: str) -> TrustedIssuer:
    if not isinstance(entry, dict):
        raise ImproperlyConfigured(f"{where} must be an object {{\"iss\", \"alg\", \"secret\" | \"public_key\" | \"jwks_file\", \"aud\"?}}.")
    unknown = sorted(set(entry) - CONFIG_KEYS)
    if unknown:
        raise ImproperlyConfigured(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; the keys are {', '.join(sorted(CONFIG_KEYS))}.")
    iss = entry.get("iss")
    if type(iss) is not str or not iss or iss != iss.strip():
        raise ImproperlyConfigured(f"{where}: 'iss' must be a non-empty string (the tokens' iss claim, exactly).")
    where = f"{where} (iss {iss!r})"
    alg = entry.get("alg")
    if alg not in ALGORITHMS:
        raise ImproperlyConfigured(f"{where}: 'alg' must be one of {', '.join(ALGORITHMS)}, not {alg!r}.")
    kinds = [kind for kind in KEY_KINDS if kind in entry]
    if len(kinds) != 1:
        raise ImproperlyConfigured(f"{where}: give exactly one of 'secret' (HS256), 'public_key' (RS256, ES256) or 'jwks_file'.")
    kind = kinds[0]
    if kind == "secret":
        if alg != "HS256":
            raise ImproperlyConfigured(f"{where}: 'secret' is for HS256; {alg} takes 'public_key' or 'jwks_file'.")
        keys = ((None, _secret_key(entry["secret"], where)),)
    elif kind == "public_key":
        if alg == "HS256":
            raise ImproperlyConfigured(f"{where}: HS256 takes 'secret' (or 'jwks_file'), not 'public_key'.")
        keys = ((None, _public_key(entry["public_key"], alg, where)),)
    else:
        keys = _jwks_keys(entry["jwks_file"], alg, where)
    return TrustedIssuer(iss=iss, alg=alg, audience=_audience(entry.get("aud"), where), keys=keys)


def _audience(aud, where: str) -> tuple[str, ...] | None:
    if aud is None:
        return None
    values = [aud] if isinstance(aud, str) else aud
    if not isinstance(values, list) or not values or any(type(v) is not str or not v for v in values):
        raise ImproperlyConfigured(f"{where}: 'aud' must be a non-empty string or a list of them.")
    return tuple(values)


def _secret_key(secret, where: str) -> bytes:
    if type(secret) is not str:
        raise ImproperlyConfigured(f"{where}: 'secret' must be a string.")
    key = secret.encode()
    if len(key) < MIN_SECRET_BYTES:
        raise ImproperlyConfigured(f"{where}: an HS256 'secret' must be at least {MIN_SECRET_BYTES} bytes (RFC 7518, section 3.2); this one is {len(key)}.")
    try:
        return jwt.get_algorithm_by_name("HS256").prepare_key(key)
    except jwt.InvalidKeyError as exc:
        raise ImproperlyConfigured(f"{where}: 'secret' is not usable as an HMAC key: {exc}") from None


def _public_key(pem, alg: str, where: str):
    if type(pem) is not str or "-----BEGIN" not in pem:
        raise ImproperlyConfigured(f"{where}: 'public_key' must be a PEM public key (-----BEGIN PUBLIC KEY-----...).")
    if "PRIVATE KEY" in pem:
        raise ImproperlyConfigured(f"{where}: 'public_key' holds a private key; give Inbox only the public half.")
    try:
        key = jwt.get_algorithm_by_name(alg).prepare_key(pem)
    except (jwt.InvalidKeyError, ValueError, TypeError) as exc:
        raise ImproperlyConfigured(f"{where}: 'public_key' is not a usable {alg} public key: {exc}") from None
    return _checked_public_key(key, alg, where)


def _checked_public_key(key, alg: str, where: str):
    if alg == "RS256":
        if not isinstance(key, rsa.RSAPublicKey):
            raise ImproperlyConfigured(f"{where}: an RS256 key must be an RSA public key.")
        if key.key_size < MIN_RSA_BITS:
            raise ImproperlyConfigured(f"{where}: the RSA key has {key.key_size} bits; at least {MIN_RSA_BITS} are required.")
    elif alg == "ES256":
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise ImproperlyConfigured(f"{where}: an ES256 key must be an EC public key on the P-256 curve.")
    return key


def _jwks_keys(path, alg: str, where: str) -> tuple[tuple[str | None, Any], ...]:
    if type(path) is not str or not path:
        raise ImproperlyConfigured(f"{where}: 'jwks_file' must be the path of a JWKS file.")
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ImproperlyConfigured(f"{where}: the jwks_file {path!r} cannot be read: {exc}") from None
    except ValueError as exc:
        raise ImproperlyConfigured(f"{where}: the jwks_file {path!r} is not JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ImproperlyConfigured(f"{where}: the jwks_file {path!r} is not a JWK Set ({{\"keys\": [...]}}).")
    keys: list[tuple[str | None, Any]] = []
    for n, jwk in enumerate(document["keys"]):
        if not isinstance(jwk, dict):
            raise ImproperlyConfigured(f"{where}: key {n} of {path!r} is not a JSON object.")
        # Keys for another algorithm or for encryption may share the set: they are not this issuer's.
        if jwk.get("kty") != _KTY[alg] or jwk.get("use", "sig") != "sig" or jwk.get("alg", alg) != alg:
            continue
        if alg == "ES256" and jwk.get("crv") != "P-256":
            continue
        kid = jwk.get("kid")
        if kid is not None and type(kid) is not str:
            raise ImproperlyConfigured(f"{where}: key {n} of {path!r} has a kid that is not a string.")
        try:
            key = jwt.PyJWK(jwk, algorithm=alg).key
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise ImproperlyConfigured(f"{where}: key {n} of {path!r} is not a usable {alg} key: {exc}") from None
        if alg == "HS256":
            if len(key) < MIN_SECRET_BYTES:
                raise ImproperlyConfigured(f"{where}: key {n} of {path!r} is shorter than {MIN_SECRET_BYTES} bytes.")
        else:
            if "d" in jwk:
                raise ImproperlyConfigured(f"{where}: key {n} of {path!r} is a private key; give Inbox only the public keys.")
            _checked_public_key(key, alg, f"{where}, key {n} of {path!r}")
        if any(kid == other for other, _ in keys):
            raise ImproperlyConfigured(f"{where}: two keys of {path!r} have the kid {kid!r}.")
        keys.append((kid, key))
    if not keys:
        raise ImproperlyConfigured(f"{where}: the jwks_file {path!r} holds no {alg} signing key (kty {_KTY[alg]!r}).")
    if len(keys) > 1 and any(kid is None for kid, _ in keys):
        raise ImproperlyConfigured(f"{where}: every key of {path!r} needs a kid when it holds several.")
    return tuple(keys)


# --- Verifying a token ------------------------------------------------------------------------


def claimed_issuer(raw: str | bytes):
    """
    The ``iss`` a token claims, unverified (None without one or for a token that is not a JWT): which
    path verifies it. Never trusted for anything else.
    """
    try:
        payload = jwt.decode(raw, options={"verify_signature": False})
    except (jwt.PyJWTError, ValueError, TypeError):
        return None
    return payload.get("iss")


def verify(raw: str | bytes) -> TrustedClaims:
    """The claims of a token signed by a trusted issuer, or InvalidTrustedToken (UntrustedIssuer) saying why."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("ascii")
        except UnicodeDecodeError:
            raise InvalidTrustedToken("The token is not a JWT.") from None
    if len(raw) > MAX_TOKEN_LENGTH:
        raise InvalidTrustedToken(f"The token is longer than {MAX_TOKEN_LENGTH} characters.")
    try:
        header = jwt.get_unverified_header(raw)
        unverified = jwt.decode(raw, options={"verify_signature": False})
    except (jwt.PyJWTError, ValueError, TypeError):
        raise InvalidTrustedToken("The token is not a JWT.") from None
    iss = unverified.get("iss")
    issuer = issuers().get(iss) if type(iss) is str else None
    if issuer is None:
        raise UntrustedIssuer("The token's issuer (iss) is not trusted.")
    # Exactly the issuer's algorithm, before any key is used: never "none", never HS256 with an RSA key.
    if header.get("alg") != issuer.alg:
        raise InvalidTrustedToken(f"Tokens of this issuer are signed with {issuer.alg}.")
    key = issuer.key_for(header.get("kid"))
    for name in ("exp", "nbf", "iat"):  # said precisely here (PyJWT would take "123" or true for a date)
        if name in unverified:
            _numeric_date(unverified, name)
    try:
        payload = jwt.decode(
            raw,
            key,
            algorithms=[issuer.alg],
            issuer=issuer.iss,
            audience=list(issuer.audience) if issuer.audience else None,
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "iss", "sub"], "enforce_minimum_key_length": True},
        )
    except jwt.ExpiredSignatureError:
        raise InvalidTrustedToken("The token has expired.") from None
    except jwt.MissingRequiredClaimError as exc:
        raise InvalidTrustedToken(f"The token has no {exc.claim!r} claim.") from None
    except jwt.InvalidAudienceError:
        if issuer.audience:
            raise InvalidTrustedToken("The token's audience (aud) is not this service's.") from None
        raise InvalidTrustedToken("The token is addressed to an audience (aud), and none is configured for its issuer.") from None
    except jwt.InvalidSignatureError:
        raise InvalidTrustedToken("The token's signature is not its issuer's.") from None
    except jwt.ImmatureSignatureError:
        raise InvalidTrustedToken("The token is not valid yet (nbf or iat in the future).") from None
    except InvalidSubjectError:
        raise InvalidTrustedToken("The token's subject (sub) must be a string: the external id.") from None
    except (jwt.PyJWTError, ValueError, TypeError, OverflowError, KeyError):
        raise InvalidTrustedToken("The token is malformed.") from None
    exp = _numeric_date(payload, "exp")
    if exp <= time.time():  # no leeway for exp: an expired token is expired
        raise InvalidTrustedToken("The token has expired.")
    try:
        external_id = external_id_check(payload["sub"])
    except InvalidExternalId as exc:
        raise InvalidTrustedToken(f"The token's subject (sub) is not an external id: {exc}") from None
    return TrustedClaims(
        iss=issuer.iss,
        external_id=external_id,
        exp=exp,
        email=_email(payload.get("email")),
        name=_name(payload.get("name")),
        payload=payload,
    )


def _numeric_date(payload: dict, name: str) -> float:
    value = payload[name]
    if type(value) not in (int, float) or not math.isfinite(value) or not 0 <= value <= MAX_NUMERIC_DATE:
        raise InvalidTrustedToken(f"The token's {name!r} claim must be a NumericDate (seconds since 1970).")
    return float(value)


def _email(value) -> str | None:
    if value is None:
        return None
    if type(value) is not str or len(value) > MAX_EMAIL_LENGTH:
        raise InvalidTrustedToken(f"The token's email claim must be an e-mail address of at most {MAX_EMAIL_LENGTH} characters.")
    try:
        validate_email(value)
    except ValidationError:
        raise InvalidTrustedToken("The token's email claim is not an e-mail address.") from None
    return value


def _name(value) -> str | None:
    if value is None:
        return None
    if type(value) is not str or len(value) > MAX_NAME_LENGTH or "\x00" in value:
        raise InvalidTrustedToken(f"The token's name claim must be a string of at most {MAX_NAME_LENGTH} characters without NUL.")
    return value


# --- The recipient a token names --------------------------------------------------------------


class _VerifiedTokens:
    """Raw token -> TrustedToken until the token's exp (bounded; forgotten when INBOX changes)."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._cache = directory.TTLCache(max_entries, setting=None)

    def get(self, raw) -> TrustedToken | None:
        token = self._cache.get(raw)
        if token is not None and token.claims.exp <= time.time():
            return None
        return token

    def add(self, raw, token: TrustedToken) -> None:
        self._cache.set(raw, token, ttl=token.claims.exp - time.time())

    def clear(self) -> None:
        self._cache.clear()


verified_tokens = _VerifiedTokens()


def cached_token(raw) -> TrustedToken | None:
    """The TrustedToken of ``raw`` if this process verified it and it has not expired (no database)."""
    return verified_tokens.get(raw)


def token_authenticate(raw) -> TrustedToken:
    """
    Verify a token of a trusted issuer and ensure the recipient its ``sub`` names (created on their
    first token; ``email``/``name`` claims update the profile). Remembered until the token's exp.
    Raises InvalidTrustedToken; database errors propagate (the caller answers 503 / 1013).
    """
    token = verified_tokens.get(raw)
    if token is not None:
        return token
    claims = verify(raw)  # everything checked before anything is written
    try:
        found = recipient_ensure(external_id=claims.external_id, email=claims.email, name=claims.name)
    except InvalidExternalId as exc:
        raise InvalidTrustedToken(f"The token's subject (sub) cannot be a recipient: {exc}") from None
    token = TrustedToken(claims=claims, user_id=found.pk, token_version=directory.current_token_version(found.pk))
    verified_tokens.add(raw, token)
    return token


@receiver(setting_changed)
def _forget_configuration(*, setting, **kwargs) -> None:
    """Tests and hosts that change INBOX at run time get the new issuers (and no token of the old ones)."""
    if setting == "INBOX":
        issuers.cache_clear()
        verified_tokens.clear()
