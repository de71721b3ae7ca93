"""How `kn func` runs a Python CloudEvents function, run the same way locally.

The same glue as func's `instanced-cloudevents` scaffolding (service/main.py):
import `new` from the function's package and hand it to func-python's `serve`,
which binds LISTEN_ADDRESS and speaks the function lifecycle.
"""

from __future__ import annotations

import logging

from func_python.cloudevent import serve

logging.basicConfig(level=logging.INFO)

from function import new  # type: ignore[import-not-found]  # noqa: E402 - first on PYTHONPATH

if __name__ == "__main__":
    serve(new)
