"""The functions under test, each as the stack would serve it on a given port.

parse-comment is built by the stack's own `services.function`, so the benchmark
serves it with the very command and environment `./taskw up` uses. The bare
baseline is the same component with only the function package swapped: any
difference between the two is the function's code, not how it is served.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from stack import services
from stack.layout import Layout

BARE = Path(__file__).resolve().parent / "bare"
FLOOR = Path(__file__).resolve().parent / "floor"
PARSE_COMMENT = "parse-comment"


@dataclass(frozen=True)
class Subject:
    name: str
    component: Callable[[int], services.Component]  # the served process, on this port


def parse_comment(layout: Layout, stack_env: Mapping[str, str]) -> Subject:
    # The stack derives a function's login from DATABASE_URL only for an embedded
    # database; handing over the URL the running function itself uses, with
    # embedded_db=False, makes `services.function` pass it through unchanged.
    env = {**stack_env, "DATABASE_URL": stack_env["DATABASE_URL_PARSE_COMMENT"]}

    def component(port: int) -> services.Component:
        return services.function(layout, PARSE_COMMENT, port, env, embedded_db=False)

    return Subject(PARSE_COMMENT, component)


def bare(layout: Layout, stack_env: Mapping[str, str]) -> Subject:
    return _swapped(layout, stack_env, "bare", BARE)


def floor(layout: Layout, stack_env: Mapping[str, str]) -> Subject:
    """bench/floor: pydantic and psycopg, one model validated and one statement run; with
    parse-comment's environment, so its DATABASE_URL (parse-comment's login)."""
    return _swapped(layout, stack_env, "floor", FLOOR)


def _swapped(layout: Layout, stack_env: Mapping[str, str], name: str,
             package: Path) -> Subject:
    real = parse_comment(layout, stack_env)

    def component(port: int) -> services.Component:
        served = real.component(port)
        pythonpath = os.pathsep.join([str(package), str(layout.root)])
        return dataclasses.replace(served, name=name, cwd=package,
                                   env={**served.env, "PYTHONPATH": pythonpath})

    return Subject(name, component)
