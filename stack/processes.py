"""Child processes of the local stack, and the record that lets `stop` find them.

Each child runs in its own session (Ctrl-C reaches only the supervisor, which
stops the children in order) and gets a parent-death signal, so a supervisor
killed with SIGKILL takes its children with it. The record in `.stack/state.json`
is written as each child starts, so `./taskw stop` can clean up after any crash.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Running:
    name: str
    pid: int
    started: float  # psutil create_time: tells a live child from a reused pid
    stop_signal: int
    ports: tuple[int, ...] = ()


def free_port(preferred: int | None = None) -> int:
    """A free TCP port on 127.0.0.1, the preferred one if it is free."""
    candidates = [preferred, 0] if preferred else [0]
    for candidate in candidates:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", candidate or 0))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise RuntimeError("no free port")  # pragma: no cover


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def _die_with_parent(sig: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, sig)


def spawn(name: str, command: Sequence[str], *, env: Mapping[str, str], log: Path,
          cwd: Path | None = None, user: str | None = None,
          stop_signal: int = signal.SIGTERM, ports: Sequence[int] = ()) -> tuple[
              subprocess.Popen[bytes], Running]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(
            list(command), env=dict(env), cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, user=user,
            preexec_fn=lambda: _die_with_parent(stop_signal),
        )
    started = psutil.Process(process.pid).create_time()
    return process, Running(name, process.pid, started, int(stop_signal), tuple(ports))


def alive(entry: Running) -> bool:
    try:
        process = psutil.Process(entry.pid)
        same = bool(process.create_time() == entry.started)
        return same and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def terminate(entries: Sequence[Running], timeout: float = 10.0) -> None:
    """Stop these children (in the order given), then kill what is left."""
    for entry in entries:
        if alive(entry):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(entry.pid, entry.stop_signal)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(e) for e in entries):
        time.sleep(0.05)
    for entry in entries:
        if alive(entry):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(entry.pid, signal.SIGKILL)
    for entry in entries:  # reap our own children; others are reaped by init
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(entry.pid, os.WNOHANG)


class StateFile:
    """`.stack/state.json`: the supervisor and every child it started."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> tuple[Running | None, list[Running]]:
        try:
            raw = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return None, []
        supervisor = Running(**raw["supervisor"]) if raw.get("supervisor") else None
        children = [Running(**{**c, "ports": tuple(c.get("ports", ()))})
                    for c in raw.get("children", [])]
        return supervisor, children

    def write(self, supervisor: Running, children: Sequence[Running]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"supervisor": asdict(supervisor),
                                   "children": [asdict(c) for c in children]}, indent=2))
        tmp.replace(self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log written)"
