"""What must hold for any input, one function a target (bytes in, AssertionError out)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

from broker import cesql
from eventing import ethereum, jws, siwe
from eventing.denominations import DEFAULT_REGISTRY
from eventing.edge import Delivery, Edge, Reply, Route
from eventing.events import IssueCommentEvent
from eventing.settings import Settings
from tests.factory import asgi_call

# -- CESQL (Trigger filters) -------------------------------------------------------------
EVENT: Mapping[str, object] = {
    "specversion": "1.0", "id": "1", "source": "/fuzz", "type": "dev.eventworks.fuzz",
    "subject": "owner/repo#12", "count": "42", "flag": "true",
}


def check_cesql(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    try:
        expression = cesql.compile(text)
    except cesql.CesqlParseError as error:
        said = str(error)  # a refusal says why
        if not said:
            raise AssertionError("a CESQL parse error without a reason") from None
        return
    assert str(expression) == text
    result = expression.evaluate(EVENT)  # evaluation errors are values, never raised
    assert isinstance(result, cesql.Result)


# -- SIWE (EIP-4361 messages) ------------------------------------------------------------
def check_siwe(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    try:
        message = siwe.parse(text)
    except siwe.InvalidSiweMessage as error:
        if not error.args:
            raise AssertionError("a SIWE refusal without its field") from None
        return
    # What parses is exactly one message: writing it back gives the same text.
    assert siwe.format(message) == text


# -- raw transactions (RLP, EIP-1559 and legacy) ------------------------------------------
def check_raw_tx(data: bytes) -> None:
    try:
        item = ethereum.rlp_decode(data)
    except ethereum.MalformedTransaction:
        pass
    else:
        assert ethereum.rlp_encode(item) == data, "RLP is canonical: one encoding per item"
    try:
        decoded = ethereum.decode(data)
    except ethereum.MalformedTransaction:
        return
    try:
        address = ethereum.recover(decoded)
    except ethereum.BadSignature:
        return
    assert address.startswith("0x")
    assert len(address) == 42


# -- the function edge (func-python's ASGI app, our decode hook, problem+json) -------------
class Echo(Edge[Settings]):
    """A function with a real route and model, no stores: every input reaches the edge's
    decode and validation, the paths that face the outside world."""

    name = "fuzz"
    settings_type = Settings

    def routes(self) -> Mapping[str, Route[Any]]:
        return {"dev.knative.source.github.issue_comment": Route(IssueCommentEvent, self.on)}

    async def on(self, delivery: Delivery[IssueCommentEvent]) -> Reply | None:
        return None


@dataclass
class _Served:
    app: Any = None
    loop: asyncio.AbstractEventLoop | None = None


_served = _Served()
CONTENT_TYPES = ("application/json", "application/cloudevents+json", "text/plain", "",
                 "application/cloudevents-batch+json", "application/json; charset=utf-8")
CE_HEADERS = ("ce-id", "ce-source", "ce-type", "ce-specversion", "ce-subject", "ce-time",
              "ce-authid", "ce-traceparent", "content-length")
ANSWERS = {200, 202, 400, 405, 413}


def _app() -> tuple[Any, asyncio.AbstractEventLoop]:
    if _served.app is None:
        from func_python.cloudevent import ASGIApplication

        loop = asyncio.new_event_loop()
        function = Echo()
        loop.run_until_complete(_started(function))
        _served.app, _served.loop = ASGIApplication(function), loop
    assert _served.loop is not None
    return _served.app, _served.loop


async def _started(function: Echo) -> None:
    function.start({"LOG_LEVEL": "ERROR"})


def request_of(data: bytes) -> tuple[str, list[tuple[bytes, bytes]], bytes]:
    """Split fuzz bytes into a method, headers and a body (the first bytes choose)."""
    if len(data) < 3:
        return "POST", [], data
    method = ("POST", "POST", "POST", "GET", "PUT")[data[0] % 5]
    headers = [(b"content-type", CONTENT_TYPES[data[1] % len(CONTENT_TYPES)].encode())]
    rest = data[2:]
    count = data[2] % 6
    for _ in range(count):
        if len(rest) < 2:
            break
        name = CE_HEADERS[rest[0] % len(CE_HEADERS)].encode()
        size = rest[1] % 24
        headers.append((name, rest[2:2 + size]))
        rest = rest[2 + size:]
    return method, headers, rest


def answer(method: str, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[int, dict[str, str], bytes]:  # noqa: E501
    app, loop = _app()
    status, raw, content = loop.run_until_complete(
        asyncio.wait_for(asgi_call(app, method, headers, body), 5))
    response_headers = {k.decode().lower(): v.decode() for k, v in raw}
    return status, response_headers, content


def check_edge(data: bytes) -> None:
    method, headers, body = request_of(data)
    status, response_headers, content = answer(method, headers, body)
    assert status in ANSWERS, f"status {status} for {method} {headers!r} {body[:80]!r}"
    if status >= 400:
        assert response_headers.get("content-type") == "application/problem+json"
        problem = json.loads(content)
        assert problem["status"] == status, problem
        assert problem["title"], problem
        assert "Traceback" not in problem.get("detail", "")
        if status == 400:
            assert problem.get("field"), f"a 400 names the field: {problem}"


# -- the comment grammar (parse-comment: $SYM:AMT$, /link 0x…, closes #N) -----------------
GRAMMAR = Path(__file__).resolve().parents[2] / "functions" / "parse-comment" / "function" \
    / "grammar.py"
MAXIMUM = Decimal(1_000_000)  # parse-comment's default BOUNTY_MAX_AMOUNT


def _grammar() -> ModuleType:
    """parse-comment's grammar module by its file: every function's package is called
    `function`, so importing it by that name would clash with the others' in one process."""
    spec = importlib.util.spec_from_file_location("parse_comment_grammar", GRAMMAR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being made
    spec.loader.exec_module(module)
    return module


grammar = _grammar()


def check_comment(data: bytes) -> None:
    """The grammar is total (a value or a `Problem` in words, never an exception) and what
    it reads, written back in its own shape, reads the same."""
    text = data.decode("utf-8", errors="replace")
    for candidate in grammar.find_candidates(text):
        assert candidate.text in text
        reading = grammar.read_amount(candidate, DEFAULT_REGISTRY, MAXIMUM)
        if isinstance(reading, grammar.Problem):
            assert reading.text, "a refused amount says why"
            continue
        assert isinstance(reading, grammar.Amount)
        assert 0 < reading.amount <= MAXIMUM
        assert reading.base_units == reading.amount.scaleb(reading.decimals)
        for written in (f"${reading.denomination}:{reading.plain}$",
                        f"\\${reading.denomination.lower()}: {reading.plain} \\$"):
            (again,) = grammar.find_candidates(written)
            assert grammar.read_amount(again, DEFAULT_REGISTRY, MAXIMUM) == reading, written
    argument = grammar.link_argument(text)
    if argument:
        assert argument in text
        assert not any(c.isspace() for c in argument)
        if grammar.is_address(argument):
            assert grammar.link_argument(f"/link {argument}") == argument
    for reference in grammar.closing_references(text):
        assert 0 < reference.number < 10**9
        where = f"{reference.repository}#" if reference.repository else "#"
        assert grammar.closing_references(f"closes {where}{reference.number}") == (reference,)


# -- HS256 tokens (eventing/jws.py) against PyJWT, the reference --------------------------
JWS_KEY = "the fuzzer's HS256 secret, 32 bytes or more"
JWS_OPTIONS: Mapping[str, Any] = {"audience": "lease-key", "require": ("exp", "sub")}


def check_jws(data: bytes) -> None:
    """Refusals are InvalidToken with a reason that holds neither key nor token, and what
    we accept PyJWT accepts with the same claims (we may refuse more: eventing/jws.py)."""
    import jwt

    token = data.decode("utf-8", errors="replace")
    try:
        claims = jws.decode(token, JWS_KEY, **JWS_OPTIONS)
    except jws.InvalidToken as refused:
        said = str(refused)
        assert said
        assert JWS_KEY not in said
        # (a few characters of a token may well be a word of the reason)
        assert len(token) < 8 or token not in said
        return
    theirs = jwt.decode(token, JWS_KEY, algorithms=["HS256"], audience="lease-key",
                        options={"require": ["exp", "sub"]})
    assert theirs == claims


TARGETS: Mapping[str, Callable[[bytes], None]] = {
    "cesql": check_cesql,
    "siwe": check_siwe,
    "raw-tx": check_raw_tx,
    "edge": check_edge,
    "comment": check_comment,
    "jws": check_jws,
}
