"""Calls between functions (`Callers`, `caller_token`): a function reached directly by
named callers only (lease-key, by sign-tx) cannot tell them apart on the network (in
Knative every request may come through the activator), so each caller presents a
short-lived HS256 token it mints from a secret shared with the callee alone: `sub` the
caller's name, `aud` the callee's name, `iat` and `exp` at most CALLER_TOKEN_MAX_SECONDS
apart. Anything else is 401 (no, forged, expired or mis-addressed token) or 403 (a valid
token of a caller not on the list).

The tokens are HS256 JWTs made by eventing/jws.py and verified by eventing.auth's Verifier
(which verifies HS256 with it too): neither side loads PyJWT, whose import of cryptography
would cost sign-tx and lease-key 10 MiB of RSS (docs/decisions.md, "HS256 by hand"). Kept
apart from auth.py because only a function with named callers (and its callers) needs them.
"""

from __future__ import annotations

import hmac
import time
from typing import Final

from pydantic import SecretStr

from eventing import jws
from eventing.auth import AuthSettings, Verifier, bearer
from eventing.errors import Forbidden, Unauthorized

# A caller's token lives seconds: long enough for one request and its retries over a slow
# network, too short to be worth stealing from a log or a proxy.
CALLER_TOKEN_SECONDS: Final = 60
CALLER_TOKEN_MAX_SECONDS: Final = 300
CALLER_TOKEN_LEEWAY_SECONDS: Final = 5


def caller_token(secret: str, caller: str, audience: str, *,
                 ttl_seconds: int = CALLER_TOKEN_SECONDS, now: float | None = None) -> str:
    """The bearer token `caller` presents to the function `audience` (HS256, `secret`
    shared by the two alone)."""
    issued = int(time.time() if now is None else now)
    return jws.encode({"sub": caller, "aud": audience, "iat": issued,
                       "exp": issued + ttl_seconds}, secret)


class Callers:
    """Who may call a function directly: the holders of its caller secret, named in
    `allowed`. Every call must carry a caller token for `audience` (the function's name);
    the broker never reaches such a function, so there is no Auth Context to fall back
    on."""

    def __init__(self, secret: SecretStr, audience: str, allowed: frozenset[str]) -> None:
        self.audience = audience
        self.allowed = allowed
        self._verifier = Verifier(AuthSettings.model_validate({
            "JWT_SECRET": secret, "JWT_AUDIENCE": audience,
            "JWT_LEEWAY_SECONDS": CALLER_TOKEN_LEEWAY_SECONDS}))

    def admit(self, authorization: str | None) -> str:
        """The caller's name; Unauthorized without a valid caller token for this
        audience, Forbidden for a valid one of a caller not allowed here."""
        token = bearer(authorization)
        if token is None:
            raise Unauthorized(f"{self.audience} answers named callers only: send "
                               "'Authorization: Bearer <caller token>'",
                               field="header authorization")
        claims = self._verifier.claims(token, require=("exp", "iat", "sub", "aud"))
        issued, expires, caller = claims["iat"], claims["exp"], claims["sub"]
        if not isinstance(issued, int) or not isinstance(expires, int) \
                or expires - issued > CALLER_TOKEN_MAX_SECONDS:
            raise Unauthorized(f"a caller token lives at most {CALLER_TOKEN_MAX_SECONDS} s",
                               field="header authorization")
        # Compared in constant time, and with every name, so that the time taken says
        # nothing about which names are allowed.
        known = False
        for name in sorted(self.allowed):
            known |= isinstance(caller, str) and hmac.compare_digest(
                caller.encode(), name.encode())
        if not known:
            raise Forbidden(f"{self.audience} does not answer this caller",
                            field="header authorization")
        return str(caller)
