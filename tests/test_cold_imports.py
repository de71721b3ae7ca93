"""What a function imports before its first event (issue 8's cold-start target), without a clock.

Each function's module is imported the way `python -m stack.scaffold` imports it, in a fresh
interpreter, and the test looks at `sys.modules`: the packages a function imports only when a
request needs them (docs/decisions.md, "Cold start") must not be there. Timings are noisy on
a shared machine; which modules are loaded is not, so a regression (an eager import added
back, a new heavy dependency at module level) fails here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = sorted(p.name for p in (ROOT / "functions").iterdir() if (p / "func.yaml").is_file())

# Nobody imports these at start: PyGithub and its HTTP stack only at parse-comment's first
# GitHub call; httpx at the first call that needs it (the outbox relay's first fact);
# PyJWT and cryptography only by an edge that verifies RS256 tokens (a JWKS) or PyGithub;
# HS256 tokens are eventing/jws.py's; cffi's
# parser (pycparser) never: pycryptodome runs on its ctypes backend; httpx's command-line
# client (click, pygments, rich) never: eventing/http.py.
EVERYWHERE = frozenset({
    "github", "requests", "urllib3", "nacl", "charset_normalizer", "jwt", "cryptography",
    "pycparser", "cffi", "click", "pygments", "rich",
})
# What each function needs for no event at all until one asks for it.
DEFERRED: dict[str, frozenset[str]] = {
    "parse-comment": frozenset({"httpx", "coincurve", "Crypto", "grpc", "aetcd"}),
    "link-identity": frozenset({"httpx", "grpc", "aetcd"}),
    "lease-key": frozenset({"httpx", "coincurve", "Crypto", "psycopg", "psycopg_pool"}),
    "sign-tx": frozenset(),
    "verify-tx": frozenset({"httpx", "grpc", "aetcd"}),
    "todo-crud": frozenset({"httpx", "coincurve", "Crypto", "grpc", "aetcd"}),
    "accrue-payment": frozenset({"httpx", "coincurve", "Crypto", "grpc", "aetcd"}),
}

PROBE = """
import json, sys
import function
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def loaded_at_import(name: str) -> set[str]:
    """Top-level packages in sys.modules after importing the function as the scaffold does."""
    folder = ROOT / "functions" / name
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(ROOT)])}
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=folder, env=env,
                          capture_output=True, text=True, check=True, timeout=60)
    return set(json.loads(done.stdout))


def test_given_the_functions_when_listed_then_each_has_its_deferred_imports_named():
    assert set(DEFERRED) == set(FUNCTIONS)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_given_a_fresh_interpreter_when_a_function_is_imported_then_no_deferred_module_is(name):
    loaded = loaded_at_import(name)
    assert "function" in loaded  # the probe imported what it claims to
    assert sorted(loaded & (EVERYWHERE | DEFERRED[name])) == []


# Started, and through the caller token's path once (sign-tx mints one as its first call to
# lease-key does; lease-key admits one): HS256 only, so no PyJWT (eventing/jws.py). Nothing
# connects: the stores' addresses are a closed port, and nothing waits for them.
SECRET = "the cold-import probe's HS256 secret, 32+ bytes"
STARTED = """
import asyncio, base64, json, sys
from function import new
from eventing import callers
SECRET, NAME = sys.argv[1], sys.argv[2]
ENV = {"ETCD_ENDPOINTS": "http://127.0.0.1:9", "LEASE_KEY_TOKEN_SECRET": SECRET,
       "LOG_LEVEL": "ERROR", "DATABASE_URL": "postgresql://probe@127.0.0.1:9/probe",
       "LEASE_KEY_URL": "http://127.0.0.1:9", "KEY_ENCRYPTION_KEY":
       base64.b64encode(bytes(32)).decode()}

async def main() -> None:
    function = new()
    function.start(ENV)
    try:
        if NAME == "sign-tx":
            assert function._lease_key._tokens.header().startswith("Bearer ")
        else:
            token = callers.caller_token(SECRET, "sign-tx", "lease-key")
            await function.admit(f"Bearer {token}")
    finally:
        function.stop()

asyncio.run(main())
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


@pytest.mark.parametrize("name", ["sign-tx", "lease-key"])
def test_given_a_caller_token_function_when_started_and_a_token_made_or_checked_then_no_pyjwt(
        name: str) -> None:
    folder = ROOT / "functions" / name
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(ROOT)])}
    done = subprocess.run([sys.executable, "-c", STARTED, SECRET, name], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = set(json.loads(done.stdout.splitlines()[-1]))
    assert "function" in loaded
    assert sorted(loaded & {"jwt", "cryptography"}) == []


HS256_VERIFIER = """
import json, sys
from eventing import auth
SECRET = sys.argv[1]
verifier = auth.Verifier(auth.AuthSettings.from_env({"JWT_SECRET": SECRET}))
assert verifier.verify(auth.sign(SECRET, "octocat")).user == "octocat"
for bad in ("not.a.jwt", auth.sign(SECRET, "octocat", ttl_seconds=-120),
            auth.sign(SECRET + "!", "octocat")):
    try:
        verifier.verify(bad)
    except Exception:
        pass
    else:
        raise AssertionError("a bad token was accepted")
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def test_given_an_hs256_verifier_when_it_verifies_and_refuses_tokens_then_no_pyjwt() -> None:
    # accrue-payment's and todo-crud's edge (JWT_SECRET only), without their stores.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", HS256_VERIFIER, SECRET], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(set(json.loads(done.stdout)) & {"jwt", "cryptography"}) == []
