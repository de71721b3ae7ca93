"""Starting inputs for each target: real, valid examples, so mutations start deep."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

import yaml

from eventing import ethereum, jws
from tests.test_siwe import EXAMPLE_COM as SIWE_EXAMPLE

ROOT = Path(__file__).resolve().parents[2]
TCK = ROOT.parent / "shared" / "reference" / "cesql-tck"
GOLDEN = ROOT / "tests" / "data" / "github" / "issue_comment.created.json"
REGRESSIONS = Path(__file__).resolve().parent / "regressions"

# eth-account's documented example key; only ever signs fuzz seeds.
DOC_KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")


def cesql() -> list[bytes]:
    found: list[bytes] = []
    for file in sorted(TCK.glob("*.yaml")):
        for case in yaml.safe_load(file.read_text()).get("tests", []):
            found.append(str(case["expression"]).encode())
    return found


def siwe() -> list[bytes]:
    return [SIWE_EXAMPLE.encode(), SIWE_EXAMPLE.split("\nResources:")[0].encode()]


def raw_tx() -> list[bytes]:
    tx = ethereum.UnsignedTx(chain_id=1, nonce=7, max_priority_fee_per_gas=2 * 10**9,
                             max_fee_per_gas=40 * 10**9, gas_limit=65_000,
                             to="0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48", value=1,
                             data=b"\xa9\x05\x9c\xbb" + bytes(64))
    raw, _hash, _sender = ethereum.sign(tx, DOC_KEY)
    legacy = bytes.fromhex(
        "f86c098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a7640000"
        "8025a028ef61340bd939bc2195fe537567866003e1a15d3c71ff63e1590620aa636276a067cbe9d8997f"
        "761aecb703304b3800ccf555c9f3dc64214b297fb1966a3b6d83")
    return [raw, legacy]


def edge() -> list[bytes]:
    """Requests in the layout `targets.request_of` reads: method, content type, headers."""
    payload = json.dumps(json.loads(GOLDEN.read_text())).encode()

    def header(index: int, value: bytes) -> bytes:
        return bytes([index, len(value)]) + value

    binary = bytes([0, 0, 4]) + header(0, b"abc") + header(1, b"/s") + header(
        2, b"dev.knative.source.github.issue_comment") + header(3, b"1.0") + payload
    structured = bytes([0, 1, 0]) + json.dumps({
        "specversion": "1.0", "id": "1", "source": "/s",
        "type": "dev.knative.source.github.issue_comment", "data": json.loads(payload)}).encode()
    return [binary, structured, bytes([3, 2, 0]) + b"hello"]


def comment() -> list[bytes]:
    """Comments as people write them: a bounty, escaped, malformed, a claim, a /link."""
    body = json.loads(GOLDEN.read_text())["comment"]["body"]
    return [text.encode() for text in (
        body, "I'll pay $USDC:100.50$ for this", r"worth \$eth:0.5\$ to us",
        "$USDC:1,000$ or $DAI:-5$ or $XYZ:7$ and $x:y$ in a formula",
        "Closes #12, fixes: owner/repo#7\n/claim https://github.com/o/r/issues/3",
        "/link 0x52908400098527886E0F7030069857D2E4169EE7\n",
    )]


def adversarial(size: int) -> list[bytes]:
    """Comments of about `size` bytes shaped to make a backtracking regex split long runs
    every way: unclosed amounts, blanks after a keyword, many almost-patterns."""
    half = size // 2
    return [text.encode() for text in (
        "$USDC:" + "1" * half + " " * half,           # unclosed amount, digits then blanks
        "$USDC:" + "1 " * half + "\\",                # alternating, ends on a lone backslash
        ("$A: 1" + " \t" * 30) * (size // 66),       # many unclosed amounts
        "closes" + " " * half + ":" + " " * half,     # blanks around a keyword's colon
        "/claim" + " " * size,
        ("fixes " + "o" * 39 + "/" + "r" * 100) * (size // 146),  # almost a reference
        "/link" + " " * half + "0x" + "a" * half,
        " " * size + "\n/link",
    )]


def jws_tokens() -> list[bytes]:
    """A caller token that verifies (far from expiring), and ones that must not."""
    from tests.fuzz.targets import JWS_KEY

    good = {"sub": "sign-tx", "aud": "lease-key", "iat": 1_700_000_000, "exp": 4_000_000_000}
    return [jws.encode(claims, JWS_KEY).encode() for claims in (
        good, {**good, "aud": ["verify-tx", "lease-key"]}, {**good, "exp": 1},
        {**good, "nbf": 4_000_000_000}, {"sub": "sign-tx"})]


def regressions(name: str) -> list[Path]:
    """Inputs a fuzzer once failed on (tests/fuzz/regressions/<target>/), replayed by
    tests/test_fuzz.py and given to every atheris run as seeds."""
    return sorted(p for p in (REGRESSIONS / name).glob("*") if p.is_file())


SEEDS: Mapping[str, Callable[[], list[bytes]]] = {
    "cesql": cesql, "siwe": siwe, "raw-tx": raw_tx, "edge": edge, "comment": comment,
    "jws": jws_tokens,
}
