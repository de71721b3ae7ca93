"""`./taskw bench -- --runs 7 --requests 1000`: every function beside a bare func-python
function (cold start, sequential and concurrent events/s, idle memory), delivery through
the broker against posting directly (latency, sustained events/s), the bounty flow end to
end (merged PR → paid), the signing pipeline end to end against a bare signing loop with
lease-key under contention, todo-crud and accrue-payment's ledger against bare insert
loops; prints tables and a summary against the previous result, writes
bench/results/<timestamp>.json and .png. `--quick`: everything small, for a test."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench import bounty, brokered, fleet, ledger, measure, report, signing, todo, workloads
from bench.events import Events
from bench.fleet import FleetResult
from bench.processes import BenchFailure
from bench.subjects import Subject, bare, floor
from stack.layout import Layout
from stack.supervisor import running_env

NO_STACK = 2
FAILED = 1
PARTS = ("functions", "broker", "bounty", "signing", "todo", "ledger")
# --quick: every part, small (a test runs it; its figures mean nothing).
QUICK = {"runs": 1, "requests": 20, "concurrency": 4, "events": 20, "burst": 100,
         "transactions": 10, "lease_seconds": 0.5, "todo_commands": 10, "ledger_events": 10,
         "bounties": 1}


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}")
        return value
    parse.__name__ = "int"  # argparse names the type in its messages
    return parse


def arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="./taskw bench --", description=__doc__)
    parser.add_argument("--runs", type=_at_least(1), default=7,
                        help="cold starts per function (default 7)")
    parser.add_argument("--requests", type=_at_least(2), default=1000,
                        help="events per function, sequential and again concurrent "
                             "(default 1000)")
    parser.add_argument("--clients", type=_at_least(1), default=fleet.CONCURRENCY,
                        help="concurrent clients per function "
                             f"(default {fleet.CONCURRENCY})")
    parser.add_argument("--function", action="append", default=None, metavar="NAME",
                        help="only this function (repeatable; a name of the functions "
                             "table, e.g. sign-tx); default every one")
    parser.add_argument("--bounties", type=_at_least(1), default=bounty.SAMPLES,
                        help=f"bounties paid end to end (default {bounty.SAMPLES})")
    parser.add_argument("--events", type=_at_least(2), default=brokered.EVENTS,
                        help="sequential events per path for the broker's latency "
                             f"(default {brokered.EVENTS})")
    parser.add_argument("--burst", type=_at_least(1), default=brokered.BURST,
                        help="events in the broker's throughput burst "
                             f"(default {brokered.BURST})")
    parser.add_argument("--concurrency", type=_at_least(1), default=brokered.CONCURRENCY,
                        help="concurrent clients posting the burst "
                             f"(default {brokered.CONCURRENCY})")
    parser.add_argument("--transactions", type=_at_least(1), default=signing.TRANSACTIONS,
                        help="transactions signed end to end and in the bare loop "
                             f"(default {signing.TRANSACTIONS})")
    parser.add_argument("--lease-seconds", type=float, default=signing.LEASE_SECONDS,
                        help="seconds of lease/release loops per number of workers "
                             f"(default {signing.LEASE_SECONDS:g})")
    parser.add_argument("--todo-commands", type=_at_least(2), default=todo.COMMANDS,
                        help="todo commands sent to todo-crud, and transactions of the "
                             f"bare PostgreSQL loop (default {todo.COMMANDS})")
    parser.add_argument("--ledger-events", type=_at_least(2), default=ledger.EVENTS,
                        help="task facts booked by accrue-payment, and transactions of "
                             f"the bare insert loop (default {ledger.EVENTS})")
    parser.add_argument("--only", type=_parts, default=None,
                        help="run these parts, comma-separated: functions (cold start, "
                             "events/s, memory), broker (latency, throughput), bounty "
                             "(the flow end to end), signing (end to end, bare loop, "
                             "leases), todo (commands/s beside a bare PostgreSQL loop), "
                             "ledger (events/s, bare insert loop); default all")
    parser.add_argument("--results", type=Path, default=report.RESULTS,
                        help="where <timestamp>.json and .png go, and earlier results are "
                             "read from (default bench/results)")
    parser.add_argument("--quick", action="store_true",
                        help="every count small (a smoke run for tests; figures "
                             "meaningless); explicit options still win")
    args = parser.parse_args(argv)
    if args.quick:
        defaults = parser.parse_args([])
        for key, value in QUICK.items():
            if getattr(args, key) == getattr(defaults, key):
                setattr(args, key, value)
    return args


def _parts(text: str) -> list[str]:
    chosen = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in chosen if p not in PARTS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(PARTS)}")
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    args = arguments(argv)
    # Importing func-python (tests.factory does) calls logging.basicConfig(INFO), and
    # httpx then logs every request it sends, inside the timed loop.
    logging.getLogger().setLevel(logging.WARNING)
    layout = Layout.from_env()
    stack_env = running_env(layout)
    if stack_env is None:
        print("No local stack is running: the benchmark needs its database and Kafka.\n"
              "Start one with `./taskw start`, then run `./taskw bench` again.",
              file=sys.stderr)
        return NO_STACK
    if "DATABASE_URL_PARSE_COMMENT" not in stack_env:
        print(f"{layout.env_file} has no DATABASE_URL_PARSE_COMMENT: restart the stack "
              "(`./taskw stop && ./taskw start`).", file=sys.stderr)
        return NO_STACK

    parts = args.only or list(PARTS)
    if "signing" in parts and "DATABASE_URL_BATCH" not in stack_env:
        print(f"{layout.env_file} has no DATABASE_URL_BATCH: restart the stack "
              "(`./taskw stop && ./taskw start`).", file=sys.stderr)
        return NO_STACK
    baseline = bare(layout, stack_env)
    logs = args.results / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    started = datetime.now(UTC)
    clock = time.perf_counter()
    parameters: dict[str, object] = {"only": args.only, "quick": args.quick}
    try:
        functions = None
        if "functions" in parts:
            functions = _functions(args, layout, stack_env, baseline, logs)
            parameters["functions"] = {
                "runs": args.runs, "requests": args.requests, "clients": args.clients,
                "only": args.function, "warmup_requests": fleet.WARMUP,
                "discarded_cold_starts": fleet.DISCARDED,
                "poll_interval_ms": measure.POLL_INTERVAL * 1000,
                "interleave_chunk": fleet.CHUNK, "idle_seconds": fleet.IDLE,
                "target_cold_start_ratio": fleet.TARGET_COLD_START_RATIO,
                "target_memory_mib": fleet.TARGET_MEMORY_MIB}
        broker = None
        if "broker" in parts:
            print(f"broker: a private ingress and dispatcher; {args.events} sequential events "
                  f"per path, then bursts of {args.burst} with {args.concurrency} clients…",
                  flush=True)
            broker = brokered.run(layout, stack_env, baseline, Events(), logs,
                                  count=args.events, burst=args.burst,
                                  concurrency=args.concurrency)
            parameters["broker"] = {
                "events": args.events, "burst": args.burst, "concurrency": args.concurrency,
                "warmup_events": brokered.WARMUP, "interleave_chunk": brokered.CHUNK,
                "partitions": brokered.PARTITIONS, "namespace": brokered.NAMESPACE,
                "target_added_latency_p50_ms": brokered.TARGET_ADDED_P50_MS,
                "target_events_per_second": brokered.TARGET_EVENTS_PER_SECOND}
        paid = None
        if "bounty" in parts:
            paid = bounty.run(stack_env, samples=args.bounties,
                              say=lambda line: print(line, flush=True))
            parameters["bounty"] = {"samples": args.bounties}
        signed = None
        if "signing" in parts:
            signed = signing.run(stack_env, transactions=args.transactions,
                                 lease_seconds=args.lease_seconds)
            parameters["signing"] = {
                "transactions": args.transactions, "lease_seconds": args.lease_seconds,
                "lease_workers": list(signing.LEASE_WORKERS),
                "lease_ttl_seconds": signing.LEASE_TTL_SECONDS,
                "refused_pause_ms": signing.REFUSED_PAUSE * 1000,
                "bare_runs": signing.BARE_RUNS, "target_ratio": signing.TARGET_RATIO}
        todos = None
        if "todo" in parts:
            todos = todo.run(stack_env, count=args.todo_commands)
            parameters["todo"] = {"commands": args.todo_commands, "warmup": todo.WARMUP,
                                  "statements_per_command": todo.STATEMENTS}
        booked = None
        if "ledger" in parts:
            booked = ledger.run(stack_env, events=args.ledger_events)
            parameters["ledger"] = {"events": args.ledger_events,
                                    "concurrency": [1, ledger.CONCURRENCY],
                                    "users": ledger.USERS,
                                    "interleave_chunk": ledger.CHUNK}
    except BenchFailure as failure:
        print(f"benchmark failed: {failure}", file=sys.stderr)
        return FAILED

    result = report.Report(started=started, parameters=parameters, functions=functions,
                           broker=broker, signing=signed, todo=todos, ledger=booked,
                           bounty=paid)
    print()
    print(report.table(result))
    print()
    print(report.summary(result, args.results))
    path = report.write(result, args.results)
    shown = path.relative_to(layout.root) if path.is_relative_to(layout.root) else path
    print(f"\nwritten {shown} in {time.perf_counter() - clock:.0f} s "
          f"and its chart beside it (function logs: {logs}/)")
    return 0


def _functions(args: argparse.Namespace, layout: Layout, stack_env: Mapping[str, str],
               baseline: Subject, logs: Path) -> FleetResult:
    chosen = workloads.catalog(stack_env)
    if args.function:
        unknown = set(args.function) - {w.name for w in chosen}
        if unknown:
            raise BenchFailure(f"no function {', '.join(sorted(unknown))}; choose from "
                               + ", ".join(w.name for w in chosen))
        chosen = [w for w in chosen if w.name in args.function]
    subjects = {w.function: workloads.subject(layout, stack_env, w.function) for w in chosen}
    return fleet.run(chosen, subjects, baseline, logs, lambda line: print(line, flush=True),
                     runs=args.runs, requests=args.requests, concurrency=args.clients,
                     floor=floor(layout, stack_env))


if __name__ == "__main__":
    sys.exit(main())
