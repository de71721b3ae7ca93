"""Who acts: bearer JWTs verified at a trusted edge, and the CloudEvents Auth Context.

A command's actor is never what the client says in the event: it is the subject of a
bearer token (`Authorization: Bearer <jwt>`) that a trusted edge verified, written into
the CloudEvents Auth Context extension by that edge. The trusted edges are the broker
ingress (every event it stores) and the function edge (a direct call that carries a
token). Functions trust the Auth Context of what reaches them without a token, because
only the broker reaches them (DESIGN §4; docs/decisions.md, "Who acts").

Tokens:
- HS256 with a shared secret (`JWT_SECRET`), or RS256 with a key of a JWKS given as a
  file (`JWT_JWKS_FILE`) or fetched from a URL (`JWT_JWKS_URL`, cached by PyJWT's
  PyJWKClient).
  The algorithm in the token's header only picks which configured key is tried; no other
  algorithm (`none`, an RS256 token against the HS256 secret, …) is ever accepted.
- Claims: `sub` is the user id, and we define it to be the person's GitHub login, so
  that earnings pay out to the wallet linked to that login (link-identity); `role` is
  one of ROLES (default `user`); `exp` is required; `iss` and `aud` are checked when
  `JWT_ISSUER` / `JWT_AUDIENCE` are set.

The Auth Context an edge writes: `authtype` (`app_user` for a verified token: an end user
of this application, in the extension's vocabulary; `unauthenticated` for an event that
came with none), `authid` (the token's `sub`), and our extension `authrole` (the role).
Any of these a client sent is dropped first.

Calls between functions are eventing/callers.py's.

HS256 tokens are made and verified by eventing/jws.py (hmac and json); PyJWT, which loads
cryptography, is imported only by an edge configured with RS256 keys (a JWKS file or URL):
+10.5 MiB RSS and tens of ms of cold start that an HS256-only edge need not pay.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, get_args

from pydantic import AfterValidator, Field, SecretStr, field_validator

from eventing import jws
from eventing.errors import Unauthorized, Unavailable
from eventing.settings import EnvSettings, SettingsError

if TYPE_CHECKING:
    import jwt

Role = Literal["user", "manager", "accountant", "admin"]
ROLES: Final = frozenset(get_args(Role))
DEFAULT_ROLE: Final[Role] = "user"

# The CloudEvents Auth Context (extensions/authcontext.md) and our role extension
# (lowercase alphanumerics, as CloudEvents attribute names must be).
AUTHTYPE: Final = "authtype"
AUTHID: Final = "authid"
AUTHROLE: Final = "authrole"
AUTHCLAIMS: Final = "authclaims"
AUTH_ATTRIBUTES: Final = frozenset({AUTHTYPE, AUTHID, AUTHROLE, AUTHCLAIMS})
APP_USER: Final = "app_user"
UNAUTHENTICATED: Final = "unauthenticated"

HS256: Final = "HS256"
RS256: Final = "RS256"
# A user id travels in events as `UserId` (eventing.events): visible ASCII, 1-200.
MAX_SUBJECT = 200


class AuthSettings(EnvSettings):
    """How an edge verifies bearer tokens. None set: it verifies none (every token 401)."""

    jwt_secret: SecretStr | None = Field(default=None, alias="JWT_SECRET")
    jwks_file: Path | None = Field(default=None, alias="JWT_JWKS_FILE")
    jwks_url: str | None = Field(default=None, alias="JWT_JWKS_URL",
                                 pattern=r"^(https?|file)://\S+$")
    jwt_issuer: str | None = Field(default=None, alias="JWT_ISSUER")
    jwt_audience: str | None = Field(default=None, alias="JWT_AUDIENCE")
    jwt_leeway_seconds: int = Field(default=30, alias="JWT_LEEWAY_SECONDS", ge=0, le=300)

    @field_validator("jwt_secret", "jwks_file", "jwks_url", "jwt_issuer", "jwt_audience",
                     mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("jwt_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        return None if value is None else _hs256_key(value)


def _hs256_key(value: SecretStr) -> SecretStr:
    # RFC 7518 §3.2: an HS256 key of at least the hash's size, 256 bits.
    if len(value.get_secret_value().encode()) < 32:
        raise ValueError("must be at least 32 bytes (RFC 7518 §3.2)")
    return value


# A setting that holds an HS256 key (a Secret's value): long enough, never in a repr.
Hs256Secret = Annotated[SecretStr, AfterValidator(_hs256_key)]


@dataclass(frozen=True)
class Identity:
    """A verified actor: the token's subject (a GitHub login) and role."""

    user: str
    role: Role

    def context(self) -> dict[str, str]:
        """The Auth Context attributes an edge writes for this actor."""
        return {AUTHTYPE: APP_USER, AUTHID: self.user, AUTHROLE: self.role}


UNAUTHENTICATED_CONTEXT: Final[Mapping[str, str]] = {AUTHTYPE: UNAUTHENTICATED}


def bearer(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (RFC 6750), None when
    there is no header; any other scheme or shape is a 401."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise Unauthorized("the Authorization header must be 'Bearer <token>'",
                           field="header authorization")
    return token


class Verifier:
    """Verifies bearer tokens against the configured keys. Thread-safe; `verify` may
    block on the first fetch of a JWKS URL, so async code calls `verified`."""

    def __init__(self, settings: AuthSettings) -> None:
        self._settings = settings
        self._secret = (None if settings.jwt_secret is None
                        else settings.jwt_secret.get_secret_value())
        # PyJWT (and with it cryptography) only for RS256 keys, and only when some are
        # configured: an HS256-only edge never loads it (eventing/jws.py).
        self._jwks: jwt.PyJWKSet | None = None
        self._client: jwt.PyJWKClient | None = None
        if settings.jwks_file is not None:
            import jwt

            try:
                self._jwks = jwt.PyJWKSet.from_json(settings.jwks_file.read_text())
            except (OSError, ValueError, jwt.PyJWTError) as exc:
                raise SettingsError(f"JWT_JWKS_FILE is not a readable JWKS: "
                                    f"{type(exc).__name__}") from None
        if settings.jwks_url is not None:
            import jwt

            self._client = jwt.PyJWKClient(settings.jwks_url, cache_keys=True, timeout=5)
        # The algorithms some configured key verifies, in the order refusals name them.
        self._accepted = tuple(a for a, on in (
            (HS256, self._secret is not None),
            (RS256, self._jwks is not None or self._client is not None)) if on)

    @property
    def configured(self) -> bool:
        return bool(self._accepted)

    @property
    def blocks(self) -> bool:
        """Whether `verify` may do I/O (a JWKS URL): then it runs off the event loop."""
        return self._client is not None

    async def context(self, authorization: str | None) -> Mapping[str, str]:
        """The Auth Context a trusted edge writes for a request with this Authorization
        header: its bearer token's identity, or unauthenticated without a token; a token
        that does not verify (or one this edge cannot verify) is Unauthorized."""
        token = bearer(authorization)
        if token is None:
            return UNAUTHENTICATED_CONTEXT
        if not self.configured:
            raise Unauthorized("this edge verifies no bearer tokens (no JWT_SECRET, "
                               "JWT_JWKS_FILE or JWT_JWKS_URL)", field="header authorization")
        return (await self.verified(token)).context()

    async def verified(self, token: str) -> Identity:
        if self.blocks:
            return await asyncio.to_thread(self.verify, token)
        return self.verify(token)

    def verify(self, token: str) -> Identity:
        """The token's identity, or Unauthorized saying why (never echoing the token);
        Unavailable when the JWKS URL cannot be read."""
        return identity_of(self.claims(token))

    def claims(self, token: str, require: tuple[str, ...] = ("exp", "sub")) -> dict[str, Any]:
        """The claims of a token whose signature, expiry, issuer and audience hold, and
        that has every claim of `require`; Unauthorized (or Unavailable) otherwise."""
        try:
            header = jws.header(token)
        except jws.InvalidToken:
            raise Unauthorized("the bearer token is not a JWT",
                               field="header authorization") from None
        algorithm = header.get("alg")
        settings = self._settings
        if algorithm == HS256 and self._secret is not None:
            try:
                return jws.decode(token, self._secret, require=require,
                                  issuer=settings.jwt_issuer, audience=settings.jwt_audience,
                                  leeway=settings.jwt_leeway_seconds)
            except jws.InvalidToken as exc:
                raise _refused(exc, expired=isinstance(exc, jws.ExpiredToken)) from None
        if algorithm == RS256 and RS256 in self._accepted:
            return self._rs256_claims(token, header, require)
        raise Unauthorized(f"bearer tokens signed with {algorithm!r} are not accepted "
                           f"(accepted: {', '.join(self._accepted) or 'none'})",
                           field="header authorization")

    def _rs256_claims(self, token: str, header: Mapping[str, Any],
                      require: tuple[str, ...]) -> dict[str, Any]:
        import jwt

        key = self._rs256_key(token, header)
        settings = self._settings
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=[RS256],
                issuer=settings.jwt_issuer, audience=settings.jwt_audience,
                leeway=settings.jwt_leeway_seconds,
                options={"require": list(require),
                         "verify_aud": settings.jwt_audience is not None})
        except jwt.PyJWTError as exc:
            raise _refused(exc, expired=isinstance(exc, jwt.ExpiredSignatureError)) from None
        return claims

    def _rs256_key(self, token: str, header: Mapping[str, Any]) -> Any:
        import jwt

        if self._jwks is not None:
            kid = header.get("kid")
            keys = [k for k in self._jwks if kid is None or k.key_id == kid]
            if not keys:
                raise Unauthorized("the bearer token's key id is not in the JWKS",
                                   field="header authorization")
            return keys[0].key
        if self._client is None:  # pragma: no cover - claims() asked for a configured key
            raise RuntimeError("no RS256 key is configured")
        try:
            return self._client.get_signing_key_from_jwt(token).key
        except jwt.PyJWKClientConnectionError:
            raise Unavailable("the JWKS to verify the bearer token cannot be read",
                              retry_after=5) from None
        except jwt.PyJWTError:
            raise Unauthorized("the bearer token's key id is not in the JWKS",
                               field="header authorization") from None


def _refused(exc: Exception, *, expired: bool) -> Unauthorized:
    """What a token that failed verification (eventing.jws's or PyJWT's) is answered."""
    if expired:
        return Unauthorized("the bearer token has expired", field="header authorization")
    # PyJWT's messages (and eventing.jws's, which keep their words) name claims and checks,
    # never the token or the key.
    return Unauthorized(f"the bearer token is not valid: {str(exc) or type(exc).__name__}",
                        field="header authorization")


def identity_of(claims: Mapping[str, Any]) -> Identity:
    subject = claims.get("sub")
    if not isinstance(subject, str) or not 0 < len(subject) <= MAX_SUBJECT \
            or not all("\x21" <= c <= "\x7e" for c in subject):
        raise Unauthorized("the bearer token's sub must be a user id (visible ASCII, "
                           f"1-{MAX_SUBJECT} characters)", field="header authorization")
    role = claims.get("role", DEFAULT_ROLE)
    if role not in ROLES:
        raise Unauthorized(f"the bearer token's role must be one of {', '.join(sorted(ROLES))}",
                           field="header authorization")
    return Identity(user=subject, role=role)


def sign(secret: str, user: str, role: Role = DEFAULT_ROLE, *, ttl_seconds: int = 3600,
         now: float | None = None, **claims: Any) -> str:
    """An HS256 bearer token for `user` (the local stack's `./taskw token`, tests)."""
    issued = int(time.time() if now is None else now)
    payload = {"sub": user, "role": role, "iat": issued, "exp": issued + ttl_seconds, **claims}
    return jws.encode(payload, secret)
