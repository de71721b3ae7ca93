"""`python -m broker dispatcher`: every Trigger of one Broker in knative/, delivered.

The wiring comes from the same Kustomize base a cluster gets (KNATIVE_BASE); a
subscriber that is a Knative Service resolves to the local function of that name
(FUNCTION_<NAME>_URL, as the local stack sets it).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from pydantic import Field

from broker import health
from broker.dispatcher import Dispatcher
from broker.manifests import ManifestError, Resolver, load
from eventing import logs
from eventing.settings import EnvSettings

log = logging.getLogger("broker.dispatcher")

ROOT = Path(__file__).resolve().parent.parent


class DispatcherSettings(EnvSettings):
    listen_address: str = Field(default="127.0.0.1:8082", alias="LISTEN_ADDRESS",
                                pattern=r"^\S+:\d{1,5}$")
    kafka_bootstrap_servers: str = Field(alias="KAFKA_BOOTSTRAP_SERVERS")
    namespace: str = Field(default="eventworks", alias="BROKER_NAMESPACE")
    name: str = Field(default="default", alias="BROKER_NAME")
    knative_base: Path = Field(default=ROOT / "knative" / "base", alias="KNATIVE_BASE")
    max_in_flight: int = Field(default=32, alias="DISPATCHER_MAX_IN_FLIGHT", ge=1, le=1024)
    log_level: str = Field(default="INFO", alias="LOG_LEVEL",
                           pattern="^(DEBUG|INFO|WARNING|ERROR)$")


def function_resolver(env: Mapping[str, str]) -> Resolver:
    """A Knative Service named like a function is that function's local URL."""
    def resolve(kind: str, name: str, namespace: str) -> str | None:
        if kind != "Service":
            return None
        return env.get(f"FUNCTION_{name.upper().replace('-', '_')}_URL")
    return resolve


def main(env: Mapping[str, str]) -> int:
    settings = logs.started("dispatcher", DispatcherSettings, env)
    if settings is None:
        return 2
    try:
        wiring = load(settings.knative_base, function_resolver(env))
        broker = wiring.broker(settings.name, settings.namespace)
    except (ManifestError, KeyError, LookupError) as exc:
        log.error("dispatcher not started: the manifests cannot be honoured",
                  extra={"error": str(exc)})
        return 2
    triggers = wiring.triggers_of(broker.name, broker.namespace)
    dispatcher = Dispatcher(
        triggers, bootstrap=[s.strip() for s in settings.kafka_bootstrap_servers.split(",")],
        namespace=broker.namespace, broker=broker.name, partitions=broker.partitions,
        max_in_flight=settings.max_in_flight)

    def start() -> None:
        dispatcher.start()
        log.info("dispatcher started", extra={
            "broker": broker.topic, "triggers": [t.name for t in triggers]})

    def stop() -> None:
        log.info("dispatcher stopping")
        dispatcher.stop()

    health.run(settings.listen_address, dispatcher.ready, start, stop)
    return 0
