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
# PyJWT and cryptography only by an edge that verifies bearer tokens or PyGithub; cffi's
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
