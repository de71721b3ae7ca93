"""HS256 by hand (eventing/jws.py) against PyJWT 2.15.1, the reference it replaces on the
HS256 paths: the same tokens made, the same tokens accepted with the same claims, the same
tokens refused; where it is stricter than PyJWT on purpose, that is pinned here too.

Tier 1, pure: PyJWT is called the way eventing.auth called it before (algorithms=["HS256"],
`require`, `issuer`, `audience` checked only when set, `leeway`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventing import jws

KEY = "the tests' HS256 secret, at least 32 bytes"
OTHER_KEY = "another HS256 secret, also 32 bytes or more"
# Read once, when the module is collected: a whole suite may run for many minutes after
# that, so every token made from NOW is valid, expired or immature by hours, never seconds.
NOW = time.time()
HOUR = 3600
FAR = 10 * HOUR


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def signed(header: Any, payload: Any, key: str = KEY, *, raw_payload: bytes | None = None) -> str:
    """A token with any header and payload, HMAC-SHA256-signed: what neither library makes."""
    body = raw_payload if raw_payload is not None else json.dumps(payload).encode()
    signing = f"{b64(json.dumps(header).encode())}.{b64(body)}"
    mac = hmac.new(key.encode(), signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{b64(mac)}"


def resigned(token: str, key: str = KEY) -> str:
    """`token` with its first two segments kept as they are and signed again."""
    signing = token.rpartition(".")[0]
    return f"{signing}.{b64(hmac.new(key.encode(), signing.encode(), hashlib.sha256).digest())}"


HS256 = {"alg": "HS256", "typ": "JWT"}


def good(**more: Any) -> dict[str, Any]:
    return {"sub": "sign-tx", "iat": int(NOW), "exp": int(NOW) + FAR, **more}


def ours(token: str, *, require: tuple[str, ...] = (), issuer: str | None = None,
         audience: str | list[str] | None = None, leeway: float = 0,
         key: str = KEY) -> dict[str, Any]:
    return jws.decode(token, key, require=require, issuer=issuer, audience=audience,
                      leeway=leeway)


def theirs(token: str, *, require: tuple[str, ...] = (), issuer: str | None = None,
           audience: str | list[str] | None = None, leeway: float = 0,
           key: str = KEY) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(
        token, key, algorithms=["HS256"], issuer=issuer, audience=audience, leeway=leeway,
        options={"require": list(require), "verify_aud": audience is not None})
    return claims


# -- the same tokens made and read ------------------------------------------------------------
def test_given_claims_when_encoded_then_the_token_is_pyjwts_byte_for_byte() -> None:
    assert jws.encode(good(aud="lease-key"), KEY) == jwt.encode(good(aud="lease-key"), KEY,
                                                                algorithm="HS256")


def test_given_our_token_then_pyjwt_reads_the_same_claims_and_we_read_pyjwts() -> None:
    claims = good(aud=["lease-key", "verify-tx"], role="admin", jti="1")
    assert theirs(jws.encode(claims, KEY), audience="lease-key") == claims
    assert ours(jwt.encode(claims, KEY, algorithm="HS256"), audience="lease-key") == claims


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12)
# Far enough from now that the two libraries' clocks, read a few µs apart, agree.
OFFSET = st.integers(-10 * HOUR, -100) | st.integers(100, 10 * HOUR)
TIME = st.builds(lambda offset, frac: NOW + offset + frac, OFFSET,
                 st.sampled_from([0.0, 0.25, 0.75])) | st.builds(lambda o: int(NOW) + o, OFFSET)
NAMES = st.sampled_from(["lease-key", "verify-tx", "sign-tx", ""])


@st.composite
def claim_sets(draw: st.DrawFn) -> dict[str, Any]:
    claims: dict[str, Any] = draw(st.dictionaries(
        st.text(max_size=8).filter(lambda k: k not in REGISTERED), JSON, max_size=4))
    for name in ("iat", "nbf", "exp"):
        if draw(st.booleans()):
            claims[name] = draw(TIME | JSON) if draw(st.integers(0, 9)) == 0 else draw(TIME)
    for name, value in (("iss", NAMES), ("aud", NAMES | st.lists(NAMES, max_size=3) | JSON),
                        ("sub", NAMES | JSON), ("jti", NAMES | JSON)):
        if draw(st.booleans()):
            claims[name] = draw(value)
    return claims


REGISTERED = frozenset({"iat", "nbf", "exp", "iss", "aud", "sub", "jti"})
OPTIONS = st.fixed_dictionaries({
    "require": st.lists(st.sampled_from(sorted(REGISTERED)), max_size=3, unique=True).map(tuple),
    "issuer": st.none() | NAMES.filter(bool),
    "audience": st.none() | NAMES.filter(bool) | st.lists(NAMES.filter(bool), min_size=1,
                                                          max_size=2),
    "leeway": st.sampled_from([0, 5, 30]),
})


def outcome(decode: Any, token: str, options: dict[str, Any]) -> tuple[str, Any]:
    try:
        return "ok", decode(token, **options)
    except (jws.ExpiredToken, jwt.ExpiredSignatureError):
        return "expired", None
    except (jws.InvalidToken, jwt.PyJWTError):
        return "refused", None


def numeric_dates_are_json_numbers(claims: dict[str, Any]) -> bool:
    # Where we are stricter than PyJWT on purpose (eventing/jws.py): a NumericDate that is
    # a bool or a numeric string PyJWT takes through int(); we refuse it.
    return all(isinstance(claims[n], int | float) and not isinstance(claims[n], bool)
               for n in ("iat", "nbf", "exp") if n in claims)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(claims=claim_sets(), options=OPTIONS)
def test_given_random_claims_and_options_then_we_decide_as_pyjwt(
        claims: dict[str, Any], options: dict[str, Any]) -> None:
    token = jws.encode(claims, KEY)
    assert token == jwt.encode(claims, KEY, algorithm="HS256")
    theirs_said = outcome(theirs, token, options)
    ours_said = outcome(ours, token, options)
    if numeric_dates_are_json_numbers(claims) or ours_said[0] == "ok":
        assert ours_said == theirs_said
    else:
        assert ours_said[0] == "refused"


# -- the same tokens refused ------------------------------------------------------------------
def _padded(token: str) -> str:
    """`token` re-signed with `=` padding on its payload, which then needs some."""
    header, payload, _ = token.split(".")
    return resigned(f"{header}.{payload}{'=' * (-len(payload) % 4)}.x")


def _padding_needed(claims: dict[str, Any]) -> dict[str, Any]:
    # A payload of 3n+1 bytes encodes to 4n+2 characters: two `=` of padding.
    filler = ""
    while len(json.dumps({**claims, "f": filler}, separators=(",", ":"))) % 3 != 1:
        filler += "f"
    return {**claims, "f": filler}


REFUSED: dict[str, tuple[str, dict[str, Any]]] = {
    "forged": (jws.encode(good(), OTHER_KEY), {}),
    "expired": (jws.encode(good(exp=int(NOW) - FAR), KEY), {}),
    "expired beyond the leeway": (jws.encode(good(exp=int(NOW) - FAR), KEY), {"leeway": 30}),
    "immature (nbf)": (jws.encode(good(nbf=int(NOW) + FAR), KEY), {}),
    "issued in the future": (jws.encode(good(iat=int(NOW) + FAR), KEY), {"leeway": 5}),
    "wrong audience": (jws.encode(good(aud="verify-tx"), KEY), {"audience": "lease-key"}),
    "no audience": (jws.encode(good(), KEY), {"audience": "lease-key"}),
    "empty audience": (jws.encode(good(aud=[]), KEY), {"audience": "lease-key"}),
    "audience list without ours": (jws.encode(good(aud=["a", "b"]), KEY),
                                   {"audience": "lease-key"}),
    "audience list with a number": (jws.encode(good(aud=["lease-key", 1]), KEY),
                                    {"audience": "lease-key"}),
    "audience an object": (jws.encode(good(aud={"lease-key": 1}), KEY),
                           {"audience": "lease-key"}),
    "wrong issuer": (jws.encode(good(iss="https://evil.example"), KEY),
                     {"issuer": "https://id.example"}),
    "no issuer": (jws.encode(good(), KEY), {"issuer": "https://id.example"}),
    "issuer a number": (signed(HS256, good(iss=1)), {"issuer": "https://id.example"}),
    "missing exp": (jws.encode({"sub": "sign-tx"}, KEY), {"require": ("exp",)}),
    "null sub required": (jws.encode(good(sub=None), KEY), {"require": ("sub",)}),
    "sub a number": (jws.encode(good(sub=7), KEY), {}),
    "jti a number": (jws.encode(good(jti=7), KEY), {}),
    "exp a word": (jws.encode(good(exp="soon"), KEY), {}),
    "exp null": (jws.encode(good(exp=None), KEY), {}),
    "exp infinite": (signed(HS256, good(), raw_payload=b'{"sub":"s","exp":Infinity}'), {}),
    "iat not a number": (signed(HS256, good(), raw_payload=b'{"sub":"s","iat":NaN}'), {}),
    "nbf a list": (jws.encode(good(nbf=[1]), KEY), {}),
    "alg none": (jwt.encode(good(), None, algorithm="none"), {}),  # type: ignore[arg-type]
    "alg none, signed anyway": (signed({"alg": "none", "typ": "JWT"}, good()), {}),
    "no alg": (signed({"typ": "JWT"}, good()), {}),
    "alg lowercase": (signed({"alg": "hs256", "typ": "JWT"}, good()), {}),
    "alg HS512": (jwt.encode(good(), KEY + KEY, algorithm="HS512"), {}),
    # The key is an HMAC secret whatever the header says: an RS256 header is not honoured.
    "alg confusion (RS256 header, HMAC signature)": (signed({"alg": "RS256"}, good()), {}),
    "crit header": (signed({**HS256, "crit": ["exp"], "exp": 1}, good()), {}),
    "b64 false without crit": (signed({**HS256, "b64": False}, good()), {}),
    "kid a number": (signed({**HS256, "kid": 1}, good()), {}),
    "header a list": (signed(["HS256"], good()), {}),
    "header not JSON": (resigned("bm90IGpzb24." + jws.encode(good(), KEY).split(".", 1)[1]), {}),
    "payload a number": (signed(HS256, 7), {}),
    "payload not JSON": (signed(HS256, None, raw_payload=b"{sub"), {}),
    "payload not UTF-8": (signed(HS256, None, raw_payload=b'{"sub":"\xff"}'), {}),
    "padding past a whole quantum": (jws.encode(good(), KEY) + "==", {}),
    "padding where none is needed": (resigned(jws.encode(good(), KEY).replace(".", "==.", 1)),
                                     {}),
    "too much padding": (_padded(jws.encode(_padding_needed(good()), KEY)).replace(
        "==.", "===.", 1), {}),
    "a bad character": (jws.encode(good(), KEY).replace(".", "!.", 1), {}),
    "standard base64 characters": (jws.encode(good(), KEY)[:-1] + "+", {}),
    "a segment of 4n+1 characters": (jws.encode(good(), KEY) + "AA", {}),
    "stray bits in the signature": (jws.encode(good(), KEY)[:-1] + "B", {}),
    "truncated signature": (jws.encode(good(), KEY)[:-4], {}),
    "no signature": (jws.encode(good(), KEY).rpartition(".")[0] + ".", {}),
    "two segments": (jws.encode(good(), KEY).rpartition(".")[0], {}),
    "four segments": (jws.encode(good(), KEY) + ".e30", {}),
    "one segment": ("eyJhbGciOiJIUzI1NiJ9", {}),
    "empty": ("", {}),
    "not ASCII": (jws.encode(good(), KEY) + "é", {}),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_given_a_bad_token_then_both_refuse_it(case: str) -> None:
    token, options = REFUSED[case]
    with pytest.raises(jwt.PyJWTError):
        theirs(token, **options)
    with pytest.raises(jws.InvalidToken) as refused:
        ours(token, **options)
    assert KEY not in str(refused.value)
    assert not token or token not in str(refused.value)


def test_given_an_expired_token_then_both_say_expired() -> None:
    token = jws.encode(good(exp=int(NOW) - FAR), KEY)
    with pytest.raises(jwt.ExpiredSignatureError):
        theirs(token)
    with pytest.raises(jws.ExpiredToken):
        ours(token)


def test_given_an_expired_token_within_the_leeway_then_both_accept() -> None:
    now = int(time.time())  # seconds matter here: the clock of this test, not of collection
    token = jws.encode(good(exp=now - 10, iat=now + 10), KEY)
    assert ours(token, leeway=30) == theirs(token, leeway=30)


@pytest.mark.parametrize(("case", "token"), [
    ("a padded signature", jws.encode(good(), KEY) + "="),
    ("a padded payload", _padded(jws.encode(_padding_needed(good()), KEY))),
    ("exp a numeric string", jws.encode(good(exp=str(int(NOW) + FAR)), KEY)),
    ("exp true", jws.encode(good(iat=True, exp=int(NOW) + FAR), KEY)),
    ("a crit header PyJWT understands", signed({**HS256, "crit": ["b64"], "b64": True}, good())),
])
def test_given_what_pyjwt_tolerates_then_we_refuse_it(case: str, token: str) -> None:
    # Stricter on purpose (eventing/jws.py): padding, NumericDates that are not numbers, and
    # any `crit` (RFC 7515 §4.1.11: we understand no extension, so none may be critical).
    theirs(token)
    with pytest.raises(jws.InvalidToken):
        ours(token)


@pytest.mark.parametrize("key", ["", "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----",
                                 "ssh-rsa AAAAB3NzaC1yc2E"])
def test_given_an_empty_or_asymmetric_key_then_neither_signs_nor_verifies_with_it(key: str
                                                                                    ) -> None:
    with pytest.raises(jwt.PyJWTError):
        jwt.encode(good(), key, algorithm="HS256")
    with pytest.raises(jws.InvalidToken):
        jws.encode(good(), key)
    with pytest.raises(jws.InvalidToken):
        jws.decode(signed(HS256, good(), key or "x"), key)


# -- random damage ----------------------------------------------------------------------------
VALID = jws.encode(good(aud="lease-key", exp=int(NOW) + HOUR), KEY)
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/! "


@st.composite
def damaged(draw: st.DrawFn) -> str:
    token = VALID
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(token)))
        edit = draw(st.sampled_from(["replace", "insert", "delete"]))
        char = draw(st.sampled_from(ALPHABET))
        if edit == "replace" and at < len(token):
            token = token[:at] + char + token[at + 1:]
        elif edit == "insert":
            token = token[:at] + char + token[at:]
        else:
            token = token[:at] + token[at + 1:]
    return token


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(token=damaged())
def test_given_a_damaged_token_then_we_accept_it_only_if_pyjwt_does_with_the_same_claims(
        token: str) -> None:
    options: dict[str, Any] = {"audience": "lease-key", "require": ("exp", "sub")}
    ours_said, theirs_said = outcome(ours, token, options), outcome(theirs, token, options)
    if ours_said[0] == "ok":
        assert ours_said == theirs_said
    elif theirs_said[0] == "ok":
        assert "=" in token  # only padding, which we refuse on purpose
