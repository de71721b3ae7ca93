"""Fixtures shared by the tests under tests/ (the stack fixture is in the root conftest)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.subscriber import Script, Subscriber
from tests.tansu import start_tansu


@pytest.fixture(scope="module")
def kafka() -> Iterator[str]:
    """A tansu broker of this module's own: its tests may kill it."""
    tansu = start_tansu()
    try:
        yield tansu.bootstrap
    finally:
        tansu.kill()


@pytest.fixture
def subscribers() -> Iterator[list[Subscriber]]:
    """Test subscribers made with `subscriber(subscribers, script)`, closed afterwards."""
    made: list[Subscriber] = []
    yield made
    for one in made:
        one.close()


def subscriber(made: list[Subscriber], script: Script | None = None) -> Subscriber:
    made.append(Subscriber(script))
    return made[-1]
