"""pycryptodome (Keccak-256, AES-GCM), bound to its C code through ctypes.

pycryptodome binds its C code through cffi whenever cffi is importable (coincurve installs
it), and cffi's parser (pycparser) then parses C declarations at import: most of the cost of
importing pycryptodome, paid by every signing function's cold start. Its ctypes backend
binds the same C code without parsing anything, and ctypes is loaded anyway (the server
imports it). coincurve itself needs only cffi's compiled backend, never the parser.
"""

from __future__ import annotations

import importlib
import sys


def _bind_with_ctypes() -> None:
    if "Crypto.Util._raw_api" in sys.modules or "cffi" in sys.modules:
        return  # bound already, or cffi is loaded anyway: nothing to save
    sys.modules["cffi"] = None  # type: ignore[assignment]  # `import cffi` now fails
    try:
        importlib.import_module("Crypto.Util._raw_api")
    finally:
        del sys.modules["cffi"]


_bind_with_ctypes()

from Crypto.Cipher import AES  # noqa: E402 - after the backend is chosen
from Crypto.Hash import keccak as _keccak  # noqa: E402

__all__ = ["AES", "keccak256"]


def keccak256(data: bytes) -> bytes:
    return _keccak.new(digest_bits=256, data=data).digest()
