"""`./taskw bench -- --runs 7 --requests 2000`: parse-comment against a bare func-python
function (cold start, sequential throughput), delivery through the broker against
posting directly (latency, sustained events/s), and the signing pipeline end to end
against a bare signing loop, with lease-key under contention, and accrue-payment's ledger
against a bare insert loop of the same rows; prints tables, writes bench/results/."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench import brokered, ledger, measure, report, signing, todo
from bench.events import Events
from bench.processes import BenchFailure
from bench.subjects import Subject, bare, parse_comment
from stack.layout import Layout
from stack.supervisor import running_env

NO_STACK = 2
FAILED = 1
PARTS = ("functions", "broker", "signing", "todo", "ledger")


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
    parser.add_argument("--requests", type=_at_least(2), default=2000,
                        help="sequential requests per function (default 2000)")
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
    parser.add_argument("--only", choices=PARTS, default=None,
                        help="run one part: the functions (cold start, sequential), the "
                             "broker (latency, throughput), signing (end to end, bare "
                             "loop, leases), todo (commands/s beside a bare PostgreSQL "
                             "loop) or the ledger (events/s, bare insert loop); default all")
    return parser.parse_args(argv)


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

    parts = [args.only] if args.only else list(PARTS)
    if "signing" in parts and "DATABASE_URL_BATCH" not in stack_env:
        print(f"{layout.env_file} has no DATABASE_URL_BATCH: restart the stack "
              "(`./taskw stop && ./taskw start`).", file=sys.stderr)
        return NO_STACK
    subjects = [parse_comment(layout, stack_env), bare(layout, stack_env)]
    logs = report.RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    events = Events()
    started = datetime.now(UTC)
    clock = time.perf_counter()
    parameters: dict[str, object] = {"only": args.only,
                                     "event": f"github issue_comment {events.comment!r}"}
    try:
        functions = None
        if "functions" in parts:
            functions = _functions(args, subjects, events, logs)
            parameters.update({"runs": args.runs, "requests": args.requests,
                               "warmup_requests": measure.WARMUP,
                               "discarded_cold_starts": measure.DISCARDED,
                               "poll_interval_ms": measure.POLL_INTERVAL * 1000,
                               "interleave_chunk": measure.CHUNK})
        broker = None
        if "broker" in parts:
            print(f"broker: a private ingress and dispatcher; {args.events} sequential events "
                  f"per path, then bursts of {args.burst} with {args.concurrency} clients…",
                  flush=True)
            broker = brokered.run(layout, stack_env, subjects[1], events, logs,
                                  count=args.events, burst=args.burst,
                                  concurrency=args.concurrency)
            parameters["broker"] = {
                "events": args.events, "burst": args.burst, "concurrency": args.concurrency,
                "warmup_events": brokered.WARMUP, "interleave_chunk": brokered.CHUNK,
                "partitions": brokered.PARTITIONS, "namespace": brokered.NAMESPACE,
                "target_added_latency_p50_ms": brokered.TARGET_ADDED_P50_MS,
                "target_events_per_second": brokered.TARGET_EVENTS_PER_SECOND}
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
                                    "users": ledger.USERS}
    except BenchFailure as failure:
        print(f"benchmark failed: {failure}", file=sys.stderr)
        return FAILED

    result = report.Report(started=started, parameters=parameters, functions=functions,
                           broker=broker, signing=signed, todo=todos, ledger=booked)
    print()
    print(report.table(result))
    path = report.write(result)
    shown = path.relative_to(layout.root) if path.is_relative_to(layout.root) else path
    print(f"\nwritten {shown} in {time.perf_counter() - clock:.0f} s "
          f"(function logs: {logs.relative_to(layout.root)}/)")
    return 0


def _functions(args: argparse.Namespace, subjects: list[Subject], events: Events,
               logs: Path) -> report.Functions:
    for subject in subjects:  # one log per function and run, not an ever-growing one
        (logs / f"{subject.name}.log").unlink(missing_ok=True)
    print(f"cold starts: {args.runs} per function, alternating…", flush=True)
    cold = measure.cold_starts(subjects, args.runs, events, logs,
                               lambda line: print(line, flush=True))
    print(f"sequential: {args.requests} requests per function…", flush=True)
    sequential = measure.throughput(subjects, args.requests, events, logs)
    return report.Functions(subject=subjects[0].name, baseline=subjects[1].name, cold=cold,
                            sequential=sequential)


if __name__ == "__main__":
    sys.exit(main())
