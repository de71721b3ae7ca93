"""python -m batch seed N | run-once [--single-pass] [--batch-size N] | serve

- `seed N` (`./taskw seed:txs -- N`): insert N mocked transaction requests in one
  transaction; prints how many.
- `run-once` (`./taskw batch:run`): the batch reader as a job: passes until no request is
  pending (`--single-pass`: one batch only). Exit status 0 when nothing is left pending,
  1 when the broker accepted nothing (the requests stay pending).
- `serve`: the PingSource sink (batch/server.py), as the local stack runs it.

`seed` and `run-once` connect with DATABASE_URL_BATCH, else DATABASE_URL (a shared login
that SETs ROLE batch), and publish to BROKER_URL; whatever is unset comes from the
running local stack (.stack/env).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict

from batch import reader, requests
from eventing import logs

MAX_SEED = 1_000_000


class NoSettings(Exception):
    pass


def _stack_env() -> dict[str, str]:
    from stack import supervisor
    from stack.layout import Layout

    return supervisor.running_env(Layout.from_env()) or {}


def job_settings(env: Mapping[str, str], *, broker: bool) -> tuple[str, str]:
    """(database URL, broker URL): the environment first, then the running local stack."""
    database_url = env.get("DATABASE_URL_BATCH") or env.get("DATABASE_URL")
    broker_url = env.get("BROKER_URL")
    if not database_url or (broker and not broker_url):
        stack = _stack_env()
        database_url = database_url or stack.get("DATABASE_URL_BATCH")
        broker_url = broker_url or stack.get("BROKER_URL")
    if not database_url:
        raise NoSettings("set DATABASE_URL_BATCH (or DATABASE_URL), or start the local stack "
                         "(./taskw start)")
    if broker and not broker_url:
        raise NoSettings("set BROKER_URL, or start the local stack (./taskw start)")
    return database_url, broker_url or ""


def _count(text: str) -> int:
    value = int(text)
    if not 0 < value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_SEED}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m batch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    seed = commands.add_parser("seed", help="insert N mocked transaction requests")
    seed.add_argument("count", type=_count)
    once = commands.add_parser("run-once", help="publish pending requests, then exit")
    once.add_argument("--single-pass", action="store_true", help="one batch only")
    once.add_argument("--batch-size", type=_count, default=reader.BATCH_SIZE)
    once.add_argument("--concurrency", type=_count, default=reader.CONCURRENCY)
    commands.add_parser("serve", help="serve the PingSource sink (LISTEN_ADDRESS)")
    return parser


def main(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    args = _parser().parse_args(argv)
    environ = dict(os.environ if env is None else env)
    if args.command == "serve":
        from batch.server import main as serve

        return serve(environ)
    logs.configure("batch", environ.get("LOG_LEVEL", "WARNING"))
    try:
        database_url, broker_url = job_settings(environ, broker=args.command == "run-once")
    except NoSettings as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.command == "seed":
        seeded = requests.seed(database_url, args.count)
        print(f"seeded {len(seeded)} transaction requests")
        return 0
    if args.single_pass:
        done = reader.run_once(database_url, broker_url, batch_size=args.batch_size,
                               concurrency=args.concurrency)
        print(json.dumps({"selected": done.selected, "published": done.published,
                          "failed": done.failed}))
        return 0 if done.failed == 0 else 1
    drained = reader.drain(database_url, broker_url, batch_size=args.batch_size,
                           concurrency=args.concurrency)
    print(json.dumps({**asdict(drained), "seconds": round(drained.seconds, 3)}))
    return 0 if drained.complete else 1


if __name__ == "__main__":
    logging.captureWarnings(True)
    sys.exit(main(sys.argv[1:]))
