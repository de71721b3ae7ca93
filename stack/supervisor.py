"""`./taskw up`, `start` and `stop`: run the whole stack, and tear it down without a trace.

`up` runs in the foreground and stops everything on Ctrl-C or SIGTERM. `start`
runs `up` detached and returns once everything is healthy. `stop` asks a
running supervisor to stop, then removes whatever a crashed one left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType

import psutil

from broker import manifests
from broker.dispatcher_process import function_resolver
from stack import migrate, services
from stack.layout import Layout, env_file_text, read_env_file
from stack.processes import Running, StateFile, alive, free_port, port_open, spawn, tail, terminate
from stack.services import Component

READY_TIMEOUT = 60.0
START_TIMEOUT = 240.0

Say = Callable[[str], None]


class StartFailure(Exception):
    def __init__(self, component: str, reason: str, log_tail: str) -> None:
        super().__init__(f"{component} {reason}")
        self.component = component
        self.reason = reason
        self.log_tail = log_tail


class Stopping(BaseException):
    """Raised in the main thread by SIGINT/SIGTERM so that cleanup runs."""


@dataclass
class Started:
    component: Component
    process: subprocess.Popen[bytes]
    entry: Running


class Stack:
    def __init__(self, layout: Layout, say: Say) -> None:
        self.layout = layout
        self.say = say
        self.state = StateFile(layout.state_file)
        me = psutil.Process()
        self.me = Running("supervisor", me.pid, me.create_time(), int(signal.SIGTERM))
        self.started: list[Started] = []
        self.env: dict[str, str] = {}
        self.ports: dict[str, int] = {}

    # -- ports and environment --------------------------------------------------------
    def port(self, name: str) -> int:
        if name not in self.ports:
            remembered = self.layout.remembered_ports().get(name)
            taken = set(self.ports.values())
            port = free_port(remembered if remembered not in taken else None)
            while port in taken:  # pragma: no cover - the kernel rarely hands one out twice
                port = free_port()
            self.ports[name] = port
        return self.ports[name]

    # -- processes --------------------------------------------------------------------
    def launch(self, components: Sequence[Component]) -> None:
        batch = []
        for component in components:
            process, entry = spawn(component.name, component.command, env=component.env,
                                   log=self.layout.log(component.name), cwd=component.cwd,
                                   user=component.user, stop_signal=component.stop_signal,
                                   ports=component.ports)
            started = Started(component, process, entry)
            self.started.append(started)
            batch.append(started)
            self.state.write(self.me, [s.entry for s in self.started])
        self.wait_ready(batch)

    def wait_ready(self, batch: Sequence[Started]) -> None:
        pending = list(batch)
        deadline = time.monotonic() + READY_TIMEOUT
        while pending:
            for started in list(pending):
                code = started.process.poll()
                name = started.component.name
                if code is not None:
                    raise StartFailure(name, f"exited with status {code} while starting",
                                       tail(self.layout.log(name)))
                if started.component.ready():
                    pending.remove(started)
            if pending and time.monotonic() > deadline:
                name = pending[0].component.name
                raise StartFailure(name, f"was not ready after {READY_TIMEOUT:.0f} s",
                                   tail(self.layout.log(name)))
            time.sleep(0.05)

    def restart(self, crashed: Started) -> Started:
        """Spawn an exited component again, on its port, as Kubernetes restarts a
        crashed container; it becomes ready on its own (no wait here)."""
        component = crashed.component
        process, entry = spawn(component.name, component.command, env=component.env,
                               log=self.layout.log(component.name), cwd=component.cwd,
                               user=component.user, stop_signal=component.stop_signal,
                               ports=component.ports)
        again = Started(component, process, entry)
        self.started[self.started.index(crashed)] = again
        self.state.write(self.me, [s.entry for s in self.started])
        return again

    def stop_all(self) -> None:
        # Functions first, then the broker and helpers, then the stores they use.
        terminate([s.entry for s in reversed(self.started)])
        for started in self.started:
            started.process.poll()

    # -- the whole stack --------------------------------------------------------------
    def start_all(self) -> None:
        layout, env = self.layout, self.env
        stores: list[Component] = []
        embedded_db = "DATABASE_URL" not in os.environ
        if embedded_db:
            self.say("preparing PostgreSQL (initdb on first run)…")
            try:
                pg = services.postgres(layout, self.port("postgres"))
            except subprocess.CalledProcessError as exc:
                raise StartFailure("postgres", f"initdb failed ({exc.returncode})",
                                   tail(layout.log("postgres-initdb"))) from None
            stores.append(pg)
        if "KAFKA_BOOTSTRAP_SERVERS" not in os.environ:
            stores.append(services.kafka(layout, self.port("kafka")))
        embedded_etcd = "ETCD_ENDPOINTS" not in os.environ
        if embedded_etcd:
            stores.append(services.etcd(layout, self.port("etcd"), self.port("etcd-peer")))
        self.launch(stores)

        server_url = os.environ.get("DATABASE_URL") or (
            f"postgresql://{services.PG_USER}@127.0.0.1:{self.port('postgres')}/postgres")
        try:
            env["DATABASE_URL"] = (migrate.ensure_database(server_url, services.DATABASE)
                                   if embedded_db else server_url)
            applied = migrate.apply(env["DATABASE_URL"], layout.root / "db" / "migrations")
        except Exception as exc:
            raise StartFailure("migrations", f"failed: {exc}", tail(layout.log("postgres"))
                               ) from None
        if applied:
            self.say(f"applied migrations: {', '.join(applied)}")
        env["KAFKA_BOOTSTRAP_SERVERS"] = os.environ.get(
            "KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{self.ports.get('kafka', 0)}")
        env["ETCD_ENDPOINTS"] = os.environ.get(
            "ETCD_ENDPOINTS", f"http://127.0.0.1:{self.ports.get('etcd', 0)}")
        # The batch reader's own login (its schema and role), like DATABASE_URL_<SCHEMA>.
        env[f"DATABASE_URL_{services.BATCH_SCHEMA.upper()}"] = services.function_database_url(
            env["DATABASE_URL"], services.BATCH_SCHEMA, embedded=embedded_db)
        kek = self.key_pool(embedded_etcd)
        env["GITHUB_WEBHOOK_SECRET"] = layout.dev_secret("github-webhook-secret")
        env["GITHUB_TOKEN"] = layout.dev_secret("github-token")
        # Bearer tokens of the local stack (./taskw token); JWT_SECRET given wins.
        env["JWT_SECRET"] = os.environ.get("JWT_SECRET") or layout.dev_secret("jwt-secret")
        # sign-tx's caller tokens for lease-key (stack.services.lease_key_token).
        env["LEASE_KEY_TOKEN_SECRET"] = (os.environ.get("LEASE_KEY_TOKEN_SECRET")
                                         or layout.dev_secret("lease-key-token-secret"))

        broker_port = self.port("broker")
        env["BROKER_URL"] = (f"http://127.0.0.1:{broker_port}/"
                             f"{services.BROKER_NAMESPACE}/{services.BROKER_NAME}")
        env["GITHUB_WEBHOOK_URL"] = f"http://127.0.0.1:{broker_port}/github"
        env["GITHUB_API_URL"] = f"http://127.0.0.1:{self.port('github-api')}"
        env["SIGNING_PAGE_URL"] = f"http://127.0.0.1:{self.port('signing-page')}/"
        self.launch([services.github_api(layout, self.port("github-api")),
                     services.signing_page(layout, self.port("signing-page"), env),
                     services.broker(layout, broker_port, env)])

        # SinkBindings of knative/base decide which functions get K_SINK, and to what.
        # Every Knative Service of knative/base is local: the functions and the batch
        # reader (the PingSource's sink), each FUNCTION_<NAME>_URL.
        served = [*services.functions(layout), services.BATCH_READER]
        urls = {services.env_key(n): f"http://127.0.0.1:{self.port(n)}" for n in served}
        env.update(urls)
        try:
            wiring = manifests.load(layout.root / "knative" / "base", function_resolver(urls))
            sinks = services.sink_urls(wiring.sink_bindings, services.functions(layout),
                                       env["BROKER_URL"])
        except manifests.ManifestError as exc:
            raise StartFailure("knative", f"manifests cannot be honoured: {exc}", "") from None
        functions = [services.function(layout, name, self.port(name), env,
                                       embedded_db=embedded_db, k_sink=sinks.get(name),
                                       key_encryption_key=kek)
                     for name in services.functions(layout)]
        for name in services.functions(layout):
            schema = services.SCHEMAS.get(name)
            if schema is not None:  # what the function itself connects with
                env[f"DATABASE_URL_{schema.upper()}"] = services.function_database_url(
                    env["DATABASE_URL"], schema, embedded=embedded_db)
        self.launch([*functions, services.batch_reader(
            layout, self.port(services.BATCH_READER), env, embedded_db=embedded_db)])
        self.launch([services.dispatcher(layout, self.port("dispatcher"), env)])
        self.launch([services.sources(layout, self.port("sources"), env)])
        layout.remember_ports(self.ports)

    def key_pool(self, embedded_etcd: bool) -> str:
        """The key-encryption key sign-tx gets; with the embedded etcd, also a development
        pool of DEV_POOL_KEYS keys when it has none (after etcd, before the functions)."""
        kek, given = services.key_encryption_key(self.layout)
        if not embedded_etcd:
            # A real etcd's pool is its operator's (./taskw keys:import): never seeded here.
            if not given:
                self.say("KEY_ENCRYPTION_KEY is not set: sign-tx gets the development key; "
                         "keys of ETCD_ENDPOINTS sealed with another key will not decrypt")
            return kek
        try:
            added = services.seed_key_pool(self.env["ETCD_ENDPOINTS"], kek)
        except Exception as exc:
            raise StartFailure("etcd", f"could not seed the key pool: {exc!r}",
                               tail(self.layout.log("etcd"))) from None
        if added:
            self.say(f"seeded the development key pool with {len(added)} keys")
        return kek

    def write_env(self) -> None:
        tmp = self.layout.env_file.with_suffix(".tmp")
        tmp.write_text(env_file_text(self.env, "Written by ./taskw up; removed by ./taskw stop."))
        tmp.chmod(0o600)
        tmp.replace(self.layout.env_file)

    def table(self) -> str:
        rows = [("component", "where", "pid", "log")]
        for s in self.started:
            log = self.layout.log(s.component.name)
            shown = os.path.relpath(log, self.layout.root) if log.is_relative_to(
                self.layout.root) else str(log)
            rows.append((s.component.name, s.component.shows, str(s.entry.pid), shown))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                         for r in rows)


# Stores hold state a restart would lose (tansu keeps its topics in memory): an exited
# store is reported, not restarted. Everything else restarts, like a crashed pod.
NOT_RESTARTED = frozenset({"postgres", "kafka", "etcd"})
BACKOFF_FIRST, BACKOFF_MOST, BACKOFF_RESET_AFTER = 0.5, 30.0, 60.0


@dataclass
class _Crashes:
    count: int = 0
    due: float | None = None      # when the pending restart may happen
    running_since: float = 0.0


class Restarts:
    """When an exited component restarts: at once the first time, then backing off
    (0.5 s doubling to 30 s) while it keeps crashing, as a CrashLoopBackOff does; a
    component that ran a minute since its last restart starts over at once."""

    def __init__(self) -> None:
        self._crashes: dict[str, _Crashes] = {}
        self._reported: set[str] = set()

    def exited(self, name: str, code: int, now: float) -> float | None:
        """Seconds to wait before restarting `name` (0: now); None: never, or said already."""
        if name in NOT_RESTARTED:
            if name in self._reported:
                return None
            self._reported.add(name)
            return float("inf")
        crashes = self._crashes.setdefault(name, _Crashes())
        if crashes.due is None:
            if now - crashes.running_since > BACKOFF_RESET_AFTER:
                crashes.count = 0
            wait = 0.0 if crashes.count == 0 else min(
                BACKOFF_MOST, BACKOFF_FIRST * 2 ** (crashes.count - 1))
            crashes.due = now + wait
            return wait if wait > 0 else 0.0
        return 0.0 if now >= crashes.due else None

    def restarted(self, name: str, now: float) -> None:
        crashes = self._crashes[name]
        crashes.count += 1
        crashes.due = None
        crashes.running_since = now


def _raise_stopping(signum: int, frame: FrameType | None) -> None:
    raise Stopping(signal.Signals(signum).name)


def up(layout: Layout, say: Say = print) -> int:
    """Start everything, print where it runs, and run until Ctrl-C or SIGTERM."""
    layout.state.mkdir(parents=True, exist_ok=True)
    layout.logs.mkdir(exist_ok=True)
    state = StateFile(layout.state_file)
    supervisor, leftovers = state.read()
    if supervisor is not None and alive(supervisor):
        say(f"a stack is already running here (supervisor pid {supervisor.pid}); "
            "./taskw stop stops it")
        return 1
    terminate([c for c in leftovers if alive(c)])  # what a crashed run left behind
    layout.env_file.unlink(missing_ok=True)

    signal.signal(signal.SIGINT, _raise_stopping)
    signal.signal(signal.SIGTERM, _raise_stopping)
    stack = Stack(layout, say)
    state.write(stack.me, [])
    try:
        stack.start_all()
        # The table first: `start` takes the env file as the sign that all is ready,
        # and then prints the table.
        (layout.state / "table.txt").write_text(stack.table() + "\n")
        stack.write_env()
        say(stack.table())
        say(f"\nenvironment: {layout.env_file}\nCtrl-C stops everything.")
        watch = Restarts()
        while True:
            for s in list(stack.started):
                code = s.process.poll()
                if code is None:
                    continue
                name = s.component.name
                delay = watch.exited(name, code, time.monotonic())
                if delay is None:
                    continue
                if delay == float("inf"):
                    say(f"{name} exited with status {code}; a store is not restarted "
                        f"(its log: {layout.log(name)})")
                    continue
                if delay > 0:
                    say(f"{name} exited with status {code}; restarting in {delay:g} s "
                        f"(its log: {layout.log(name)})")
                    continue
                stack.restart(s)
                watch.restarted(name, time.monotonic())
                say(f"{name} restarted")
            time.sleep(0.2)
    except StartFailure as failure:
        say(f"\nthe stack did not start: {failure}\n--- last lines of "
            f"{layout.log(failure.component)} ---\n{failure.log_tail}")
        return 1
    except Stopping:
        say("stopping…")
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop_all()
        layout.env_file.unlink(missing_ok=True)
        state.remove()


def start(layout: Layout, say: Say = print) -> int:
    """Run `up` detached; return once the stack is healthy (or say why it is not)."""
    layout.state.mkdir(parents=True, exist_ok=True)
    layout.logs.mkdir(exist_ok=True)
    supervisor, _ = StateFile(layout.state_file).read()
    if supervisor is not None and alive(supervisor) and layout.env_file.exists():
        say(f"the stack is already running (supervisor pid {supervisor.pid})")
        return 0
    log = layout.log("stack")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "stack", "up"], cwd=layout.root, stdout=out,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "EVENTWORKS_STACK_DIR": str(layout.state),
                 "PYTHONUNBUFFERED": "1"},
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            say(f"the stack did not start (see {log}):\n{tail(log, 40)}")
            return 1
        if layout.env_file.exists():
            say((layout.state / "table.txt").read_text())
            say(f"environment: {layout.env_file}   (./taskw stop stops it)")
            return 0
        time.sleep(0.1)
    say(f"the stack was not ready after {START_TIMEOUT:.0f} s; stopping it")
    stop(layout, say)
    return 1


def stop(layout: Layout, say: Say = print) -> int:
    """Stop a running stack, or clean up after one that crashed. Idempotent."""
    state = StateFile(layout.state_file)
    supervisor, children = state.read()
    if supervisor is not None and alive(supervisor):
        os.kill(supervisor.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while alive(supervisor) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(supervisor):
            os.kill(supervisor.pid, signal.SIGKILL)
    left = [c for c in children if alive(c)]
    if left:
        say(f"cleaning up after a crashed stack: {', '.join(c.name for c in left)}")
    terminate(left)
    busy = [p for c in children for p in c.ports if _still_open(p)]
    layout.env_file.unlink(missing_ok=True)
    state.remove()
    if busy:
        say(f"ports still in use after stop: {busy}")
        return 1
    say("stopped" if supervisor or children else "nothing was running")
    return 0


def _still_open(port: int, wait: float = 5.0) -> bool:
    deadline = time.monotonic() + wait
    while port_open(port):
        if time.monotonic() > deadline:
            return True
        time.sleep(0.05)
    return False


def running_env(layout: Layout) -> dict[str, str] | None:
    """The environment of the running stack, or None."""
    supervisor, _ = StateFile(layout.state_file).read()
    if supervisor is None or not alive(supervisor) or not layout.env_file.exists():
        return None
    return read_env_file(layout.env_file)
