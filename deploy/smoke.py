"""Each staged folder installed and served as func's Python builders do it, off-cluster.

A fresh virtualenv per function; the staged folder installed into it (the scaffolding's
`function @ <folder>`: a real PEP 517 wheel build by the function's own build backend
from its own pyproject.toml, so a missing pin or an unpackaged module fails here); then,
from a folder outside the staged one so that only the installed wheel can be imported,
the scaffolding's
`from function import new; serve(new)` under func-python with the function's func.yaml
environment. The function must answer liveness, and a CloudEvent of a type nobody handles
with 400 problem+json: the real decode path of eventing/edge.py, reached through
func-python, from the installed package. The gateway (an HTTP function) must refuse that
event at `/events` with 401 problem+json (no bearer token) and serve the signing page it
carries (`Project.probe`, `refusals`, `pages`).

Secret values are stand-ins (`SAMPLE_SECRETS`, by key); stores are unreachable loopback
addresses, which a function must survive at start (DESIGN §3: nothing connects before
`ready`). uv installs (the same resolution as the builders' pip, in seconds where pip
takes minutes on this network; its cache makes repeated runs cheap), two at a time.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
from uv import find_uv_bin

from deploy import project
from deploy.stage import Project

# Stand-ins for Secret values by key; anything else gets DEFAULT_SAMPLE.
SAMPLE_SECRETS: Mapping[str, str] = {
    "url": "postgresql://deploy-check@127.0.0.1:9/eventworks",  # port 9: nothing listens
    "key": base64.b64encode(bytes(32)).decode(),
    "jwt-secret": "deploy-check-" + "0" * 32,  # HS256 wants 32 bytes at least (RFC 7518)
    "secret": "deploy-check-" + "0" * 32,  # an HS256 key: at least 32 bytes
}
# A function that answers named callers only (eventing.callers.Callers) is probed as its
# caller calls it: function → (the env variable of the shared secret, the caller).
CALLERS: Mapping[str, tuple[str, str]] = {"lease-key": ("LEASE_KEY_TOKEN_SECRET", "sign-tx")}
DEFAULT_SAMPLE = "deploy-check"
PROBE_TYPE = "dev.eventworks.deploy.check"
# The scaffolding's service/main.py, per middleware (func's instanced-cloudevents/-http).
SERVE = "from func_python.{invoke} import serve; from function import new; serve(new)"
START_SECONDS = 180.0  # generous: CI shares 2 cores


@dataclass(frozen=True)
class Result:
    name: str
    problems: tuple[str, ...]
    seconds: float


def environment(func_yaml: Path, configmaps: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """func.yaml's run.envs as a pod would get them, Secrets replaced by stand-ins."""
    func = project.read(func_yaml)
    refs = {r.env: r for r in project.env_refs(func)[0]}
    env: dict[str, str] = {}
    for entry in (func.get("run") or {}).get("envs") or []:
        name, value = entry["name"], str(entry.get("value", ""))
        ref = refs.get(name)
        if ref is None:
            env[name] = value
        elif ref.kind == "configmap":
            env[name] = configmaps.get(ref.name, {}).get(ref.key, "")
        else:
            env[name] = SAMPLE_SECRETS.get(ref.key, DEFAULT_SAMPLE)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _install(staged: Path, venv: Path, log: Path) -> str | None:
    uv = find_uv_bin()
    with log.open("ab") as out:
        subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)],
                       check=True, stdout=out, stderr=subprocess.STDOUT)
        # Compiled as pip compiles at install: the first import then costs what a pod's does.
        install = [uv, "pip", "install", "--quiet", "--compile-bytecode", "--python",
                   str(venv / "bin" / "python"),
                   str(staged)]
        # From uv's cache alone when it holds every pin (no index requests: seconds), else
        # from the index.
        done = subprocess.run([*install, "--offline"], stdout=out, stderr=subprocess.STDOUT,
                              check=False)
        if done.returncode != 0:
            done = subprocess.run(install, stdout=out, stderr=subprocess.STDOUT, check=False)
    return None if done.returncode == 0 else f"installing {staged.name} failed (see {log})"


def caller_header(name: str, env: Mapping[str, str]) -> str | None:
    """The Authorization header the function's named caller sends, if it has one."""
    from eventing import callers

    if name not in CALLERS:
        return None
    variable, caller = CALLERS[name]
    return f"Bearer {callers.caller_token(env.get(variable, ''), caller, name)}"


def _probe(url: str, server: subprocess.Popen[bytes], log: Path, what: Project,
           caller: str | None) -> list[str]:
    deadline = time.monotonic() + START_SECONDS
    while True:
        if server.poll() is not None:
            return [f"the server exited with {server.returncode} (see {log})"]
        try:
            if httpx.get(f"{url}/health/liveness", timeout=1.0).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            return [f"no liveness within {START_SECONDS:.0f} s (see {log})"]
        time.sleep(0.2)
    probe = {"ce-specversion": "1.0", "ce-id": "deploy-check-1",
             "ce-source": "/eventworks/deploy", "ce-type": PROBE_TYPE,
             "content-type": "application/json"}
    problems = []
    if caller is not None:
        # Without its caller token the event is refused before it is read.
        if httpx.post(f"{url}{what.probe}", content=b"{}", timeout=10.0,
                      headers=probe).status_code != 401:
            problems.append(f"a {PROBE_TYPE} event without a caller token was not refused "
                            "with 401")
        probe["authorization"] = caller
    answer = httpx.post(f"{url}{what.probe}", content=b"{}", timeout=10.0, headers=probe)
    # 400 unknown-event-type; 501 from a function whose capability is not built yet; the
    # gateway's 401 (no bearer token).
    if answer.status_code not in what.refusals:
        expected = " or ".join(map(str, sorted(what.refusals)))
        problems.append(f"a {PROBE_TYPE} event to {what.probe} got {answer.status_code}, "
                        f"not {expected}")
    if not answer.headers.get("content-type", "").startswith("application/problem+json"):
        problems.append("the refusal is not application/problem+json")
    for page in what.pages:
        read = httpx.get(f"{url}{page}", timeout=10.0)
        if read.status_code != 200 or not read.content:
            problems.append(f"GET {page} got {read.status_code}, not 200 with a body")
    return problems


def smoke(staged: Path, what: Project, env: Mapping[str, str], work: Path) -> Result:
    started = time.monotonic()
    name = staged.name
    log = work / f"{name}.log"
    venv = work / f"{name}-venv"
    failed = _install(staged, venv, log)
    if failed is not None:
        return Result(name, (failed,), time.monotonic() - started)
    port = _free_port()
    run_in = work / f"{name}-run"  # not the staged folder: only the wheel is importable
    run_in.mkdir()
    keep = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    with log.open("ab") as out:
        server = subprocess.Popen(
            [str(venv / "bin" / "python"), "-c", SERVE.format(invoke=what.invoke)], cwd=run_in,
            stdout=out, stderr=subprocess.STDOUT,
            # K_SINK as a SinkBinding injects it: a function with an outbox then starts
            # its relay, so what the relay imports must be in the function's own pins.
            env={**keep, **env, "LISTEN_ADDRESS": f"127.0.0.1:{port}",
                 "K_SINK": "http://127.0.0.1:9/", "PYTHONUNBUFFERED": "1"})
        try:
            problems = _probe(f"http://127.0.0.1:{port}", server, log, what,
                              caller_header(name, env))
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    return Result(name, tuple(problems), time.monotonic() - started)


def smoke_all(staged: Mapping[str, tuple[Path, Project]],
              envs: Mapping[str, Mapping[str, str]], work: Path,
              parallel: int = 2) -> list[Result]:
    """`staged`: name -> (staged folder, project); `envs`: name -> environment."""
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        return list(pool.map(lambda name: smoke(staged[name][0], staged[name][1], envs[name],
                                                work), staged))
