"""`./taskw bench -- --runs 7 --requests 2000`: parse-comment against a bare func-python
function, cold start and sequential throughput; prints a table, writes bench/results/."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from bench import measure, report
from bench.events import Events
from bench.processes import BenchFailure
from bench.subjects import bare, parse_comment
from stack.layout import Layout
from stack.supervisor import running_env

NO_STACK = 2
FAILED = 1


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
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = arguments(argv)
    # Importing func-python (tests.factory does) calls logging.basicConfig(INFO), and
    # httpx then logs every request it sends, inside the timed loop.
    logging.getLogger().setLevel(logging.WARNING)
    layout = Layout.from_env()
    stack_env = running_env(layout)
    if stack_env is None:
        print("No local stack is running: parse-comment needs its database.\n"
              "Start one with `./taskw start`, then run `./taskw bench` again.",
              file=sys.stderr)
        return NO_STACK
    if "DATABASE_URL_PARSE_COMMENT" not in stack_env:
        print(f"{layout.env_file} has no DATABASE_URL_PARSE_COMMENT: restart the stack "
              "(`./taskw stop && ./taskw start`).", file=sys.stderr)
        return NO_STACK

    subjects = [parse_comment(layout, stack_env), bare(layout, stack_env)]
    logs = report.RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for subject in subjects:  # one log per function and run, not an ever-growing one
        (logs / f"{subject.name}.log").unlink(missing_ok=True)

    events = Events()
    started = datetime.now(UTC)
    clock = time.perf_counter()
    print(f"cold starts: {args.runs} per function, alternating…", flush=True)
    try:
        cold = measure.cold_starts(subjects, args.runs, events, logs,
                                   lambda line: print(line, flush=True))
        print(f"sequential: {args.requests} requests per function…", flush=True)
        sequential = measure.throughput(subjects, args.requests, events, logs)
    except BenchFailure as failure:
        print(f"benchmark failed: {failure}", file=sys.stderr)
        return FAILED

    result = report.Report(
        started=started,
        parameters={"runs": args.runs, "requests": args.requests,
                    "warmup_requests": measure.WARMUP,
                    "discarded_cold_starts": measure.DISCARDED,
                    "poll_interval_ms": measure.POLL_INTERVAL * 1000,
                    "interleave_chunk": measure.CHUNK,
                    "event": f"github issue_comment {events.comment!r}"},
        subject=subjects[0].name, baseline=subjects[1].name, cold=cold, sequential=sequential)
    print()
    print(report.table(result))
    path = report.write(result)
    shown = path.relative_to(layout.root) if path.is_relative_to(layout.root) else path
    print(f"\nwritten {shown} in {time.perf_counter() - clock:.0f} s "
          f"(function logs: {logs.relative_to(layout.root)}/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
