"""HS256 compact JWS tokens (RFC 7515 §7.1, RFC 7519, RFC 7518 §3.2), by hand.

Why not PyJWT here: importing `jwt` imports `cryptography` (its RSA backend) whenever it is
installed, +10.5 MiB RSS and tens of ms of cold start for a function that only ever needs
an HMAC (docs/decisions.md, "HS256 by hand"). PyJWT stays the reference: tests/test_jws.py
checks this module against it, and eventing.auth still uses it for RS256 and JWKS.

What `decode` checks, in PyJWT 2.15.1's order and with its words, for the options the
callers use (`require`, `issuer`, `audience` checked only when given, `leeway`):

- the compact form: exactly three base64url segments without padding, in the canonical
  encoding (no stray bits), a JSON object for header and payload;
- the header: `alg` exactly HS256 (never `none`, never another algorithm: the key is an
  HMAC secret and nothing else), no `crit` (no extension is understood), no `b64: false`,
  `kid` a string when present;
- the signature: HMAC-SHA256 of the first two segments, compared in constant time;
- the claims: every claim of `require` present and not null; `iat` not in the future,
  `nbf` reached and `exp` not passed, each give or take `leeway`; `iss` equal to `issuer`;
  `aud` (a string or a list of strings) naming `audience`; `sub` and `jti` strings.

Where it is stricter than PyJWT, on purpose: padded segments (PyJWT accepts `=` for some
issuers' sake; nothing of ours pads) and NumericDates that are not JSON numbers (PyJWT
takes `"123"`, `true` or `1.5` through int(); RFC 7519 §2 says a number, so `true` and
`"123"` are refused; non-finite numbers PyJWT refuses too).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

ALGORITHM: Final = "HS256"
_ALPHABET: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
# PyJWT's encoding of the same header (keys sorted, no spaces), so that a token made here
# is byte for byte the one PyJWT makes from the same claims.
_HEADER: Final = {"alg": ALGORITHM, "typ": "JWT"}
# What PyJWT refuses as an HMAC secret: an asymmetric key handed over where a shared
# secret belongs (the classic confusion of a public key used as the HMAC key).
_ASYMMETRIC_MARKERS: Final = (b"-----BEGIN ", b"ssh-ed25519", b"ssh-rsa", b"ssh-dss",
                              b"ecdsa-sha2-nistp")


class InvalidToken(ValueError):
    """Why a token is refused, in words that never hold the token or the key."""


class MalformedToken(InvalidToken):
    """Not a compact JWS at all: its header cannot even be read."""


class ExpiredToken(InvalidToken):
    """A token whose `exp` has passed (beyond the leeway)."""


def b64url_encode(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def b64url_decode(segment: bytes, name: str) -> bytes:
    """The bytes of one segment; MalformedToken unless it is unpadded, canonical base64url."""
    # len % 4 == 1 is never a whole number of bytes; a segment that does not re-encode to
    # itself carries stray bits (two tokens that differ there would both verify).
    if len(segment) % 4 == 1 or not _ALPHABET.issuperset(segment):
        raise MalformedToken(f"Invalid {name} padding")
    try:
        decoded = base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):  # pragma: no cover - the alphabet check caught it
        raise MalformedToken(f"Invalid {name} padding") from None
    if b64url_encode(decoded) != segment:
        raise MalformedToken(f"Invalid {name} padding")
    return decoded


def _json_object(data: bytes, name: str, error: type[InvalidToken]) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        raise error(f"Invalid {name} string: not JSON") from None
    if not isinstance(value, dict):
        raise error(f"Invalid {name} string: must be a json object")
    return value


def _hmac_key(key: str | bytes) -> bytes:
    raw = key.encode() if isinstance(key, str) else key
    if not raw:
        raise InvalidToken("HMAC key must not be empty.")
    if raw.lstrip().startswith(_ASYMMETRIC_MARKERS) or b"-----BEGIN " in raw:
        raise InvalidToken("The specified key is an asymmetric key or x509 certificate and "
                           "should not be used as an HMAC secret.")
    return raw


def _sign(signing_input: bytes, key: bytes) -> bytes:
    return hmac.new(key, signing_input, hashlib.sha256).digest()


def encode(claims: Mapping[str, Any], key: str | bytes) -> str:
    """The compact HS256 JWS of `claims` (a JSON object) signed with `key`."""
    if "iss" in claims and not isinstance(claims["iss"], str):
        raise TypeError("Issuer (iss) must be a string.")
    header = json.dumps(_HEADER, separators=(",", ":"), sort_keys=True).encode()
    payload = json.dumps(dict(claims), separators=(",", ":")).encode()
    signing_input = b64url_encode(header) + b"." + b64url_encode(payload)
    signature = b64url_encode(_sign(signing_input, _hmac_key(key)))
    return (signing_input + b"." + signature).decode("ascii")


def _segments(token: str) -> tuple[bytes, bytes, bytes]:
    try:
        raw = token.encode("ascii")
    except UnicodeEncodeError:
        raise MalformedToken("Invalid token: not ASCII") from None
    parts = raw.split(b".")
    if len(parts) != 3:
        raise MalformedToken("Not enough segments" if len(parts) < 3 else "Too many segments")
    return parts[0], parts[1], parts[2]


def header(token: str) -> dict[str, Any]:
    """The token's header, read without verifying anything else: which key to try.
    MalformedToken when the token is not a compact JWS with a readable header."""
    header_segment, payload_segment, signature_segment = _segments(token)
    found = _json_object(b64url_decode(header_segment, "header"), "header", MalformedToken)
    # The other two segments must be well-formed too before anyone acts on the header.
    b64url_decode(payload_segment, "payload")
    b64url_decode(signature_segment, "crypto")
    if "kid" in found and not isinstance(found["kid"], str):
        raise MalformedToken("Key ID header parameter must be a string")
    return found


def decode(token: str, key: str | bytes, *, require: Sequence[str] = (),
           issuer: str | None = None, audience: str | Sequence[str] | None = None,
           leeway: float = 0, now: float | None = None) -> dict[str, Any]:
    """The claims of an HS256 token signed with `key` whose registered claims hold;
    InvalidToken (ExpiredToken, MalformedToken) saying why otherwise."""
    found = header(token)
    if found.get("alg") != ALGORITHM:
        raise InvalidToken("The specified alg value is not allowed")
    if "crit" in found:
        raise InvalidToken("Unsupported critical extension")
    if found.get("b64", True) is False:
        raise InvalidToken("The 'b64' header parameter requires 'b64' to be listed in 'crit'.")
    signing_input, _, signature_segment = token.encode("ascii").rpartition(b".")
    signature = b64url_decode(signature_segment, "crypto")
    if not hmac.compare_digest(_sign(signing_input, _hmac_key(key)), signature):
        raise InvalidToken("Signature verification failed")
    payload_segment = signing_input.partition(b".")[2]
    claims = _json_object(b64url_decode(payload_segment, "payload"), "payload", InvalidToken)
    check_claims(claims, require=require, issuer=issuer, audience=audience, leeway=leeway,
                 now=time.time() if now is None else now)
    return claims


def _numeric_date(claims: Mapping[str, Any], name: str, what: str) -> int:
    value = claims[name]
    # A JSON number (RFC 7519 §2 NumericDate), truncated to whole seconds as PyJWT does.
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value):
        raise InvalidToken(f"{what} claim ({name}) must be a number.")
    return int(value)


def check_claims(claims: Mapping[str, Any], *, require: Sequence[str],
                 issuer: str | None, audience: str | Sequence[str] | None,
                 leeway: float, now: float) -> None:
    """The registered claims' checks, in PyJWT's order; InvalidToken naming the first that
    fails."""
    for name in require:
        if claims.get(name) is None:
            raise InvalidToken(f'Token is missing the "{name}" claim')
    if "iat" in claims and _numeric_date(claims, "iat", "Issued At") > now + leeway:
        raise InvalidToken("The token is not yet valid (iat)")
    if "nbf" in claims and _numeric_date(claims, "nbf", "Not Before") > now + leeway:
        raise InvalidToken("The token is not yet valid (nbf)")
    if "exp" in claims and _numeric_date(claims, "exp", "Expiration Time") <= now - leeway:
        raise ExpiredToken("Signature has expired")
    if issuer is not None:
        _check_issuer(claims, issuer)
    if audience is not None:
        _check_audience(claims, audience)
    if "sub" in claims and not isinstance(claims["sub"], str):
        raise InvalidToken("Subject must be a string")
    if "jti" in claims and not isinstance(claims["jti"], str):
        raise InvalidToken("JWT ID must be a string")


def _check_issuer(claims: Mapping[str, Any], issuer: str) -> None:
    if "iss" not in claims:
        raise InvalidToken('Token is missing the "iss" claim')
    if not isinstance(claims["iss"], str):
        raise InvalidToken("Payload Issuer (iss) must be a string")
    if claims["iss"] != issuer:
        raise InvalidToken("Invalid issuer")


def _check_audience(claims: Mapping[str, Any], audience: str | Sequence[str]) -> None:
    named = claims.get("aud")
    if not named:
        raise InvalidToken('Token is missing the "aud" claim')
    if isinstance(named, str):
        named = [named]
    if not isinstance(named, list) or not all(isinstance(a, str) for a in named):
        raise InvalidToken("Invalid claim format in token")
    wanted = [audience] if isinstance(audience, str) else list(audience)
    if all(a not in named for a in wanted):
        raise InvalidToken("Audience doesn't match")
