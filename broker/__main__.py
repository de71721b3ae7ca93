"""`python -m broker ingress`: serve the broker ingress (and the GitHub webhook at
`/github`) with uvicorn; `python -m broker dispatcher`: deliver the broker topic to
the Triggers of knative/; `python -m broker sources`: run the PingSources and
KafkaSources of knative/. Each runs until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

import uvicorn
import uvloop

from broker import webhook
from broker.ingress import Ingress, IngressSettings, StartupError
from eventing import logs

log = logging.getLogger("broker")


async def _serve(ingress: Ingress, listen_address: str) -> None:
    # uvicorn with httptools and uvloop: the broker's own process, where the HTTP server's
    # CPU per event is the broker's throughput (bench/); functions keep func-python's.
    host, _, port = listen_address.rpartition(":")
    server = uvicorn.Server(uvicorn.Config(
        ingress, host=host.strip("[]"), port=int(port), http="httptools", loop="none",
        lifespan="off", access_log=False, log_config=None, timeout_graceful_shutdown=3))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("broker ingress listening", extra={
        "url": f"http://{listen_address}{ingress.settings.path}"})
    if ingress.settings.github_webhook_secret is None:
        log.warning("github webhook refuses every delivery: GITHUB_WEBHOOK_SECRET is not set",
                    extra={"url": f"http://{listen_address}{webhook.PATH}"})
    else:
        log.info("github webhook listening", extra={
            "url": f"http://{listen_address}{webhook.PATH}"})
    serving = asyncio.create_task(server.serve())
    await stop.wait()
    server.should_exit = True
    await serving
    log.info("broker ingress shutting down")


def ingress_main() -> int:
    settings = logs.started("broker", IngressSettings, os.environ)
    if settings is None:
        return 2
    ingress = Ingress(settings)
    try:
        ingress.start()
        uvloop.run(_serve(ingress, settings.listen_address))
    except StartupError as exc:
        log.error("broker not started", extra={"error": str(exc)})
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the server took over the signal
        return 130
    finally:
        ingress.close()
    return 0


def dispatcher_main() -> int:
    from broker.dispatcher_process import main as run_dispatcher

    return run_dispatcher(os.environ)


def sources_main() -> int:
    from broker.sources import main as run_sources

    return run_sources(os.environ)


def match_main(args: list[str]) -> int:
    from broker.match import main as match

    return match(args)


def events_main(args: list[str]) -> int:
    from broker.tail import main as tail

    return tail(args)


COMMANDS = {
    "ingress": lambda args: ingress_main(),
    "dispatcher": lambda args: dispatcher_main(),
    "sources": lambda args: sources_main(),
    "match": match_main,
    "events": events_main,
}


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "ingress"
    if command not in COMMANDS:
        print(f"usage: python -m broker [{'|'.join(COMMANDS)}] [args]", file=sys.stderr)
        return 2
    return int(COMMANDS[command](argv[1:]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
