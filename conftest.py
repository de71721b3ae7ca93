"""Test-session wiring for the whole tree.

Every function is a package named `function` (the `kn func` layout), so one
pytest run over seven functions must switch which folder `function` means
before it imports each function's tests.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).parent
FUNCTIONS = ROOT / "functions"
_active: list[Path] = []


def _function_root(path: Path) -> Path | None:
    try:
        relative = path.resolve().relative_to(FUNCTIONS)
    except ValueError:
        return None
    return FUNCTIONS / relative.parts[0] if relative.parts else None


def activate(function_root: Path) -> None:
    """Make `import function` mean the package under `function_root`."""
    if _active and _active[0] == function_root:
        return
    for name in [n for n in sys.modules if n == "function" or n.startswith("function.")]:
        del sys.modules[name]
    if _active:
        sys.path.remove(str(_active.pop()))
    sys.path.insert(0, str(function_root))
    _active.append(function_root)


def pytest_collectstart(collector: pytest.Collector) -> None:
    root = _function_root(Path(str(collector.path)))
    if root is not None:
        activate(root)


@pytest.fixture(scope="session")
def stack_env() -> Iterator[dict[str, str]]:
    """The running local stack's environment (.stack/env).

    A stack already started with `./taskw start` is used as it is; otherwise one is
    started for the session and stopped at its end.
    """
    from stack import supervisor
    from stack.layout import Layout

    layout = Layout.from_env()
    env = supervisor.running_env(layout)
    if env is not None:
        yield env
        return
    said: list[str] = []
    if supervisor.start(layout, said.append) != 0:
        pytest.fail("the local stack did not start:\n" + "\n".join(said), pytrace=False)
    try:
        env = supervisor.running_env(layout)
        assert env is not None
        yield env
    finally:
        supervisor.stop(layout, said.append)


@pytest.fixture
def unused_port() -> int:
    """A loopback port nothing listens on (for 'the store is down' cases)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
