"""Who acts: bearer JWTs (eventing/auth.py) and the Auth Context the broker ingress
stores for them.

Tier 1: the verifier on tokens made here (HS256 with PyJWT; RS256 keys made with
cryptography, published as a JWKS file and at a JWKS URL served by a local HTTP server).
Tier 3: the real `python -m broker` on a tansu of this module's own, with the records
read back from Kafka.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from eventing import auth, callers
from eventing.edge import Delivery, Edge, Reply, Route
from eventing.errors import Forbidden, Unauthorized, Unavailable
from eventing.events import Model
from eventing.settings import Settings, SettingsError
from tests.factory import cloudevent, served
from tests.tansu import Ingress, only, start_ingress, stored

SECRET = "the tests' HS256 secret, at least 32 bytes"
KID = "test-key-1"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def jwks(rsa_key) -> dict[str, Any]:
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    return {"keys": [{**public, "kid": KID, "use": "sig", "alg": "RS256"}]}


@pytest.fixture(scope="module")
def jwks_file(jwks, tmp_path_factory) -> Path:
    path: Path = tmp_path_factory.mktemp("jwks") / "jwks.json"
    path.write_text(json.dumps(jwks))
    return path


@pytest.fixture(scope="module")
def jwks_url(jwks) -> Iterator[str]:
    body = json.dumps(jwks).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    finally:
        server.shutdown()


def verifier(**env: str) -> auth.Verifier:
    return auth.Verifier(auth.AuthSettings.from_env(env))


def rs256(key: rsa.RSAPrivateKey, claims: dict[str, Any], kid: str = KID) -> str:
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


def claims(user: str = "octocat", **more: Any) -> dict[str, Any]:
    return {"sub": user, "exp": int(time.time()) + 600, **more}


# -- tier 1: the verifier ----------------------------------------------------------------------
def test_given_an_hs256_token_then_its_subject_and_role_are_the_identity() -> None:
    identity = verifier(JWT_SECRET=SECRET).verify(auth.sign(SECRET, "octocat", "accountant"))
    assert identity == auth.Identity("octocat", "accountant")
    assert identity.context() == {"authtype": "app_user", "authid": "octocat",
                                  "authrole": "accountant"}


def test_given_no_role_claim_then_the_role_is_user() -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    assert verifier(JWT_SECRET=SECRET).verify(token).role == "user"


@pytest.mark.parametrize(("case", "make"), [
    ("expired", lambda: auth.sign(SECRET, "octocat", ttl_seconds=-120)),
    ("forged", lambda: auth.sign("some other secret, also 32 bytes+", "octocat")),
    ("no exp", lambda: jwt.encode({"sub": "octocat"}, SECRET, algorithm="HS256")),
    ("no sub", lambda: jwt.encode({"exp": int(time.time()) + 60}, SECRET, algorithm="HS256")),
    ("sub with a space", lambda: auth.sign(SECRET, "octo cat")),
    ("unknown role", lambda: auth.sign(SECRET, "octocat", "root")),  # type: ignore[arg-type]
    ("HS512", lambda: jwt.encode(claims(), SECRET + SECRET, algorithm="HS512")),
    ("alg none", lambda: jwt.encode(claims(), "", algorithm="none")),
    ("not a jwt", lambda: "abc.def"),
])
def test_given_a_bad_token_then_unauthorized_naming_the_header(case: str, make: Any) -> None:
    with pytest.raises(Unauthorized) as raised:
        verifier(JWT_SECRET=SECRET).verify(make())
    assert raised.value.field == "header authorization"
    assert SECRET not in raised.value.detail


def test_given_an_rs256_token_and_a_jwks_file_then_verified(rsa_key, jwks_file) -> None:
    identity = verifier(JWT_JWKS_FILE=str(jwks_file)).verify(
        rs256(rsa_key, claims(role="manager")))
    assert identity == auth.Identity("octocat", "manager")


def test_given_an_rs256_token_and_a_jwks_url_then_verified(rsa_key, jwks_url) -> None:
    identity = verifier(JWT_JWKS_URL=jwks_url).verify(rs256(rsa_key, claims()))
    assert identity.user == "octocat"


def test_given_a_key_id_not_in_the_jwks_then_unauthorized(rsa_key, jwks_file) -> None:
    with pytest.raises(Unauthorized):
        verifier(JWT_JWKS_FILE=str(jwks_file)).verify(rs256(rsa_key, claims(), kid="other"))


def test_given_another_rsa_key_with_our_kid_then_unauthorized(jwks_file) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(Unauthorized):
        verifier(JWT_JWKS_FILE=str(jwks_file)).verify(rs256(stranger, claims()))


def test_given_hs256_signed_with_the_public_key_then_alg_confusion_is_refused(
        rsa_key, jwks_file) -> None:
    # The classic attack: sign HS256 with the RSA public key as the HMAC secret.
    pem = rsa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "typ": "JWT", "kid": KID}
    forged = _hmac_token(claims(), pem, header)  # PyJWT itself refuses to make this one
    with pytest.raises(Unauthorized) as raised:
        verifier(JWT_JWKS_FILE=str(jwks_file)).verify(forged)
    assert "not accepted" in raised.value.detail


def test_given_an_hs256_secret_and_a_jwks_then_hs256_signed_with_the_public_key_is_refused(
        rsa_key, jwks_file) -> None:
    # With both configured the HS256 token is tried against the secret alone, never the key.
    pem = rsa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    forged = _hmac_token(claims(), pem, {"alg": "HS256", "typ": "JWT", "kid": KID})
    check = verifier(JWT_SECRET=SECRET, JWT_JWKS_FILE=str(jwks_file))
    with pytest.raises(Unauthorized) as raised:
        check.verify(forged)
    assert raised.value.detail == ("the bearer token is not valid: "
                                   "Signature verification failed")
    assert check.verify(rs256(rsa_key, claims())).user == "octocat"
    assert check.verify(auth.sign(SECRET, "octocat")).user == "octocat"


@pytest.mark.parametrize(("case", "make", "says"), [
    ("expired", lambda: auth.sign(SECRET, "octocat", ttl_seconds=-120),
     "the bearer token has expired"),
    ("forged", lambda: auth.sign("some other secret, also 32 bytes+", "octocat"),
     "the bearer token is not valid: Signature verification failed"),
    ("no exp", lambda: _hmac_token({"sub": "octocat"}, SECRET.encode(), {"alg": "HS256"}),
     'the bearer token is not valid: Token is missing the "exp" claim'),
    ("issued in the future", lambda: auth.sign(SECRET, "octocat", now=time.time() + 600),
     "the bearer token is not valid: The token is not yet valid (iat)"),
    ("crit", lambda: _hmac_token(claims(), SECRET.encode(),
                                 {"alg": "HS256", "crit": ["exp"], "exp": 1}),
     "the bearer token is not valid: Unsupported critical extension"),
    ("padded", lambda: auth.sign(SECRET, "octocat") + "=", "the bearer token is not a JWT"),
    ("four segments", lambda: auth.sign(SECRET, "octocat") + ".e30",
     "the bearer token is not a JWT"),
    ("RS256 header, no JWKS", lambda: _hmac_token(claims(), SECRET.encode(), {"alg": "RS256"}),
     "bearer tokens signed with 'RS256' are not accepted (accepted: HS256)"),
])
def test_given_a_bad_hs256_token_then_the_reason_names_the_check(case: str, make: Any,
                                                                 says: str) -> None:
    with pytest.raises(Unauthorized) as raised:
        verifier(JWT_SECRET=SECRET).verify(make())
    assert raised.value.detail == says
    assert raised.value.field == "header authorization"


def test_given_an_unreachable_jwks_url_then_unavailable_not_unauthorized(rsa_key,
                                                                          unused_port) -> None:
    with pytest.raises(Unavailable):
        verifier(JWT_JWKS_URL=f"http://127.0.0.1:{unused_port}/jwks.json").verify(
            rs256(rsa_key, claims()))


@pytest.mark.parametrize(("token_claims", "ok"), [
    ({"iss": "https://id.example", "aud": "eventworks"}, True),
    ({"iss": "https://evil.example", "aud": "eventworks"}, False),
    ({"iss": "https://id.example", "aud": "other"}, False),
    ({"aud": "eventworks"}, False),
])
def test_given_issuer_and_audience_settings_then_they_are_checked(token_claims, ok) -> None:
    check = verifier(JWT_SECRET=SECRET, JWT_ISSUER="https://id.example",
                     JWT_AUDIENCE="eventworks")
    token = jwt.encode(claims(**token_claims), SECRET, algorithm="HS256")
    if ok:
        assert check.verify(token).user == "octocat"
    else:
        with pytest.raises(Unauthorized):
            check.verify(token)


def test_given_no_keys_configured_then_every_token_is_refused() -> None:
    with pytest.raises(Unauthorized):
        verifier().verify(auth.sign(SECRET, "octocat"))


def test_given_a_short_secret_or_a_bad_jwks_file_then_settings_fail(tmp_path) -> None:
    with pytest.raises(SettingsError):
        auth.AuthSettings.from_env({"JWT_SECRET": "short"})
    bad = tmp_path / "jwks.json"
    bad.write_text("{not json")
    with pytest.raises(SettingsError):
        verifier(JWT_JWKS_FILE=str(bad))


@pytest.mark.parametrize(("header", "expected"), [
    (None, None), ("Bearer abc.def.ghi", "abc.def.ghi"), ("bearer  abc ", "abc")])
def test_given_an_authorization_header_then_the_bearer_token(header, expected) -> None:
    assert auth.bearer(header) == expected


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer a b", "abc"])
def test_given_another_scheme_then_unauthorized(header: str) -> None:
    with pytest.raises(Unauthorized):
        auth.bearer(header)


def _hmac_token(payload: dict[str, Any], key: bytes, header: dict[str, Any]) -> str:
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    signing = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    return f"{signing}.{b64(hmac.new(key, signing.encode(), hashlib.sha256).digest())}"


# -- tier 3: the broker ingress stores the Auth Context it verified ----------------------------
@pytest.fixture(scope="module")
def ingress(kafka: str, jwks_file: Path, tmp_path_factory) -> Iterator[Ingress]:
    running = start_ingress(kafka, tmp_path_factory.mktemp("broker") / "broker.log",
                            {"JWT_SECRET": SECRET, "JWT_JWKS_FILE": str(jwks_file)})
    try:
        yield running
    finally:
        running.stop()


def post(ingress: Ingress, token: str | None = None, **extensions: str):
    event = cloudevent("dev.eventworks.tests.auth", {"n": 1}, **extensions)
    headers = dict(event.headers)
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return event, httpx.post(ingress.url, content=event.body, headers=headers)


def test_given_a_valid_token_when_posted_then_the_record_carries_the_verified_auth_context(
        kafka: str, ingress: Ingress) -> None:
    event, response = post(ingress, auth.sign(SECRET, "octocat", "manager"),
                           authtype="system", authid="mallory", authrole="admin")

    assert response.status_code == 202, response.text
    record = only(kafka, event.id)
    assert record.headers["ce_authtype"] == b"app_user"
    assert record.headers["ce_authid"] == b"octocat"
    assert record.headers["ce_authrole"] == b"manager"


def test_given_an_rs256_token_from_the_jwks_file_then_accepted(kafka, ingress, rsa_key) -> None:
    event, response = post(ingress, rs256(rsa_key, claims("hubot")))

    assert response.status_code == 202, response.text
    assert only(kafka, event.id).headers["ce_authid"] == b"hubot"


def test_given_no_token_and_a_client_set_auth_context_then_it_is_unauthenticated(
        kafka: str, ingress: Ingress) -> None:
    event, response = post(ingress, authtype="app_user", authid="mallory", authrole="admin",
                           authclaims="{}")

    assert response.status_code == 202, response.text
    record = only(kafka, event.id)
    assert record.headers["ce_authtype"] == b"unauthenticated"
    assert not {"ce_authid", "ce_authrole", "ce_authclaims"} & set(record.headers)


@pytest.mark.parametrize("case", ["expired", "forged", "wrong alg", "garbage", "basic"])
def test_given_a_bad_token_when_posted_then_401_problem_and_nothing_stored(
        kafka: str, ingress: Ingress, case: str) -> None:
    token = {"expired": auth.sign(SECRET, "octocat", ttl_seconds=-120),
             "forged": auth.sign("some other secret, also 32 bytes+", "octocat"),
             "wrong alg": jwt.encode(claims(), SECRET + SECRET, algorithm="HS512"),
             "garbage": "xyz", "basic": None}[case]
    event = cloudevent("dev.eventworks.tests.auth", {"n": 1})
    headers = {**event.headers, "authorization": "Basic b2N0bzpjYXQ=" if token is None
               else f"Bearer {token}"}

    response = httpx.post(ingress.url, content=event.body, headers=headers)

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["field"] == "header authorization"
    assert stored(kafka, event.id) == []


# -- the local stack: who gets the secret, and ./taskw token ------------------------------------
def test_given_the_stack_env_then_the_broker_and_token_verifying_functions_get_jwt_secret(
        tmp_path: Path) -> None:
    from stack import services
    from stack.layout import ROOT, Layout

    layout = Layout(root=ROOT, state=tmp_path)
    env = {"SIGNING_PAGE_URL": "http://s.test/", "GITHUB_API_URL": "http://g.test",
           "ETCD_ENDPOINTS": "http://e.test", "DATABASE_URL": "postgresql://u@db.test/x",
           "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "GITHUB_WEBHOOK_SECRET": "w",
           "JWT_SECRET": SECRET}

    broker = services.broker(layout, 1, env)
    made = {name: services.function(layout, name, 1, env, embedded_db=False)
            for name in ("todo-crud", "accrue-payment", "parse-comment", "sign-tx")}

    assert broker.env["JWT_SECRET"] == SECRET
    assert {name: c.env.get("JWT_SECRET") for name, c in made.items()} == {
        "todo-crud": SECRET, "accrue-payment": SECRET, "parse-comment": None, "sign-tx": None}


def test_given_taskw_token_then_it_prints_a_token_the_stack_secret_verifies(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from stack import token
    from stack.layout import Layout

    monkeypatch.setenv("EVENTWORKS_STACK_DIR", str(tmp_path / "stack"))
    monkeypatch.delenv("JWT_SECRET", raising=False)

    assert token.main(["octocat", "accountant", "--ttl", "60"]) == 0

    printed = capsys.readouterr().out.strip()
    secret = Layout.from_env().dev_secret("jwt-secret")  # made by the first call, then kept
    identity = verifier(JWT_SECRET=secret).verify(printed)
    assert identity == auth.Identity("octocat", "accountant")
    assert jwt.decode(printed, secret, algorithms=["HS256"])["exp"] <= time.time() + 60


# -- the function edge ----------------------------------------------------------------------
class _Who(Model):
    pass


class _Said(Model):
    authtype: str | None
    authid: str | None
    authrole: str | None


class _WhoSettings(Settings, auth.AuthSettings):
    pass


class _Echo(Edge[Settings]):
    """Answers with the Auth Context its handler saw."""

    name = "echo"
    settings_type = Settings

    def routes(self) -> Mapping[str, Route[Any]]:
        return {"dev.eventworks.tests.who": Route(_Who, self.on_who)}

    async def on_who(self, delivery: Delivery[_Who]) -> Reply:
        envelope = delivery.envelope
        return Reply("dev.eventworks.tests.said", _Said(
            authtype=envelope.authtype, authid=envelope.authid, authrole=envelope.authrole))


class _VerifyingEcho(_Echo):
    settings_type = _WhoSettings


async def _who(function: Edge[Any], env: dict[str, str], bearer: str | None,
               **extensions: str) -> httpx.Response:
    event = cloudevent("dev.eventworks.tests.who", {}, **extensions)
    headers = dict(event.headers)
    if bearer is not None:
        headers["authorization"] = f"Bearer {bearer}"
    async with served(function, env) as client:
        return await client.post("/", content=event.body, headers=headers)


async def test_given_a_verifying_function_when_called_with_a_token_then_the_token_names_the_actor(
        ) -> None:
    response = await _who(_VerifyingEcho(), {"JWT_SECRET": SECRET},
                          auth.sign(SECRET, "octocat", "manager"), authid="mallory")
    assert response.json() == {"authtype": "app_user", "authid": "octocat",
                               "authrole": "manager"}


async def test_given_a_verifying_function_when_the_token_is_forged_then_401() -> None:
    response = await _who(_VerifyingEcho(), {"JWT_SECRET": SECRET},
                          auth.sign("some other secret, also 32 bytes+", "octocat"))
    assert response.status_code == 401


async def test_given_a_function_that_verifies_no_tokens_then_it_ignores_the_header() -> None:
    # e.g. Knative's dispatcher with OIDC sender authentication sends a token of its own
    response = await _who(_Echo(), {}, "an.oidc.token", authtype="app_user", authid="octocat")
    assert response.status_code == 200
    assert response.json()["authid"] == "octocat"


# -- calls between functions: caller tokens (Callers) -----------------------------------------
def lease_key_callers() -> callers.Callers:
    return callers.Callers(SecretStr(SECRET), "lease-key", frozenset({"sign-tx"}))


def test_given_sign_txs_caller_token_then_admitted_as_sign_tx() -> None:
    token = callers.caller_token(SECRET, "sign-tx", "lease-key")
    assert lease_key_callers().admit(f"Bearer {token}") == "sign-tx"


@pytest.mark.parametrize(("case", "authorization"), [
    ("none", None),
    ("forged", "Bearer " + callers.caller_token("another secret of at least 32 bytes", "sign-tx",
                                             "lease-key")),
    ("expired", "Bearer " + callers.caller_token(SECRET, "sign-tx", "lease-key",
                                              now=time.time() - 120)),
    ("other audience", "Bearer " + callers.caller_token(SECRET, "sign-tx", "verify-tx")),
    ("no audience", "Bearer " + auth.sign(SECRET, "sign-tx", ttl_seconds=60)),
    ("lives too long", "Bearer " + callers.caller_token(SECRET, "sign-tx", "lease-key",
                                                     ttl_seconds=3600)),
    ("a user's token", "Bearer " + auth.sign(SECRET, "alice", aud="lease-key")),
])
def test_given_no_valid_caller_token_then_unauthorized(case: str,
                                                        authorization: str | None) -> None:
    with pytest.raises(Unauthorized) as refused:
        lease_key_callers().admit(authorization)
    assert refused.value.field == "header authorization"


def test_given_a_valid_token_of_a_caller_not_allowed_then_forbidden() -> None:
    token = callers.caller_token(SECRET, "verify-tx", "lease-key")
    with pytest.raises(Forbidden):
        lease_key_callers().admit(f"Bearer {token}")
