"""The signing page's server on one laptop: the gateway (broker/gateway.py), page only.

`python -m stack.signing_page` (env `LISTEN_ADDRESS` host:port, `BROKER_URL`, optional
`SIGNING_PAGE_DIR`, default `signing-page/`) serves

    GET  /, /<file>         the page's files (index.html, *.js, *.css), nothing below them
    POST /events            a structured CloudEvent from the page → BROKER_URL
    GET  /health/readiness, /health/liveness

The page posts to its own origin because the broker ingress is another origin and
answers no CORS preflight. It is the same code a cluster runs as its public edge
(gateway/, docs/deploy.md "The public edge"), given no token settings and no webhook
secret: it forwards only what the page makes (the types of `PAGE_EVENTS`, source
`/eventworks/signing-page`, data that validates against the type's model; problem+json
400 naming the field otherwise, before anything reaches the broker). Bearer tokens and
GitHub webhooks go to the local broker ingress itself (BROKER_URL, GITHUB_WEBHOOK_URL).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
from pathlib import Path

from broker.gateway import Gateway
from stack import asgi_server

log = logging.getLogger("stack.signing_page")

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    from eventing import logs

    level = os.environ.get("LOG_LEVEL", "INFO")
    logs.configure("signing-page", level if level in ("DEBUG", "INFO", "WARNING") else "INFO")
    listen_address = os.environ.get("LISTEN_ADDRESS", "127.0.0.1:8082")
    broker_url = os.environ.get("BROKER_URL", "")
    if not re.fullmatch(r"\S+:\d{1,5}", listen_address) or not broker_url.startswith("http"):
        log.error("LISTEN_ADDRESS must be host:port and BROKER_URL an http(s) URL",
                  extra={"listen_address": listen_address, "broker_url": broker_url})
        return 2
    folder = Path(os.environ.get("SIGNING_PAGE_DIR", str(ROOT / "signing-page")))
    asyncio.run(asgi_server.serve(Gateway(broker_url, folder), listen_address, log,
                                  "signing page"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
