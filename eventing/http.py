"""httpx, imported without its command-line client.

httpx imports its CLI (`httpx._main`: click, pygments, rich) whenever those happen to be
installed, which costs a function's cold start a third of httpx's import for a command no
function runs. Importing httpx through this module makes that import fail as it does where
they are not installed (httpx then defines a stub `main`); the client is the same.
"""

from __future__ import annotations

import sys

if "httpx" not in sys.modules and "httpx._main" not in sys.modules:
    sys.modules["httpx._main"] = None  # type: ignore[assignment]
    try:
        import httpx
    finally:
        del sys.modules["httpx._main"]

import httpx

__all__ = ["httpx"]
