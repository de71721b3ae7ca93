"""Serving a function for the benchmark, and stopping it again.

Spawning goes through the stack's own `spawn` (own session, dies with its
parent), so an interrupted benchmark leaves no function behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from stack import processes
from stack.services import Component

STOP_TIMEOUT = 5.0


class BenchFailure(Exception):
    """The benchmark could not measure what it set out to; the message says why."""


@dataclass(frozen=True)
class Served:
    component: Component
    process: subprocess.Popen[bytes]
    log: Path
    spawned: float  # perf_counter just before the spawn: where a cold start begins

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.component.ports[0]}/"

    def exited(self) -> bool:
        return self.process.poll() is not None

    def failure(self, reason: str) -> BenchFailure:
        return BenchFailure(f"{self.component.name}: {reason}\n"
                            f"--- last lines of {self.log} ---\n{processes.tail(self.log)}")


def serve(component: Component, log: Path) -> Served:
    spawned = time.perf_counter()
    process, _ = processes.spawn(component.name, component.command, env=component.env,
                                 log=log, cwd=component.cwd, stop_signal=component.stop_signal,
                                 ports=component.ports)
    return Served(component, process, log, spawned)


def stop(served: Served) -> float:
    """Stop the function as Knative scales it down (SIGTERM), SIGKILL if it lingers;
    return how long it took to exit, in ms."""
    started = time.perf_counter()
    _signal_group(served.process.pid, served.component.stop_signal)
    try:
        served.process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        _signal_group(served.process.pid, signal.SIGKILL)
        served.process.wait()
    return (time.perf_counter() - started) * 1000


def _signal_group(pid: int, sig: int) -> None:
    # The function runs in its own session (spawn): signal the whole group, as the
    # stack does, so nothing it started outlives it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
