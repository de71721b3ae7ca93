"""Fixtures shared by the tests under tests/ (the stack fixture is in the root conftest)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.tansu import start_tansu


@pytest.fixture(scope="module")
def kafka() -> Iterator[str]:
    """A tansu broker of this module's own: its tests may kill it."""
    tansu = start_tansu()
    try:
        yield tansu.bootstrap
    finally:
        tansu.kill()
