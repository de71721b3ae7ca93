"""What a run found: the printed tables and the JSON document under bench/results/."""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from bench import brokered, signing
from bench.brokered import BrokerResult
from bench.ledger import LedgerResult
from bench.measure import ColdStarts, Throughput
from bench.signing import SigningResult
from bench.todo import TodoBench

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Functions:
    """parse-comment beside the bare function: cold starts and sequential requests."""

    subject: str  # the function measured
    baseline: str  # what it is compared with
    cold: dict[str, ColdStarts]
    sequential: dict[str, Throughput]

    def ratio(self, figure: Callable[[str], float]) -> float:
        return figure(self.subject) / figure(self.baseline)

    @property
    def rows(self) -> list[tuple[str, Callable[[str], float]]]:
        return [
            ("cold start median (ms)", lambda n: self.cold[n].median),
            ("cold start min (ms)", lambda n: self.cold[n].min),
            ("cold start max (ms)", lambda n: self.cold[n].max),
            ("stop after SIGTERM median (ms)", lambda n: self.cold[n].stop_median),
            ("sequential requests/s", lambda n: self.sequential[n].per_second),
            ("latency p50 (ms)", lambda n: self.sequential[n].p50),
            ("latency p99 (ms)", lambda n: self.sequential[n].p99),
        ]


def machine() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "memory_bytes": psutil.virtual_memory().total,
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "processor": platform.machine(),
    }


@dataclass(frozen=True)
class Report:
    started: datetime  # UTC
    parameters: dict[str, Any]
    functions: Functions | None  # None unless the functions part ran
    broker: BrokerResult | None  # None unless the broker part ran
    signing: SigningResult | None = None  # None unless the signing part ran
    ledger: LedgerResult | None = None  # None unless the ledger part ran
    todo: TodoBench | None = None  # None unless the todo part ran


def _grid(rows: Sequence[tuple[str, ...]]) -> list[str]:
    """The first column left-aligned, the others right-aligned; a rule under the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join([r[0].ljust(widths[0]),
                        *(c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True))])
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return lines


def functions_table(functions: Functions) -> str:
    header = ("", functions.subject, functions.baseline, "ratio")
    lines = _grid([header] + [
        (label, f"{figure(functions.subject):.1f}", f"{figure(functions.baseline):.1f}",
         f"{functions.ratio(figure):.2f}x")
        for label, figure in functions.rows
    ])
    lines.append(f"ratio = {functions.subject} / {functions.baseline}: above 1 for times means "
                 "slower, below 1 for requests/s means slower")
    return "\n".join(lines)


def _verdict(met: bool) -> str:
    return "PASS" if met else "MISS"


def broker_table(result: BrokerResult) -> str:
    via, direct, bare = brokered.VIA_BROKER, brokered.DIRECT, brokered.DIRECT_BARE
    lat, burst = result.latency, result.throughput
    header = ("", via, direct, bare, "added", "target", "result")
    rows: list[tuple[str, ...]] = [
        header,
        ("latency p50 (ms)", f"{lat[via].p50:.2f}", f"{lat[direct].p50:.2f}",
         f"{lat[bare].p50:.2f}", f"{result.added_p50:+.2f}",
         f"added <= {brokered.TARGET_ADDED_P50_MS:g} ms", _verdict(result.latency_met)),
        ("latency p99 (ms)", f"{lat[via].p99:.2f}", f"{lat[direct].p99:.2f}",
         f"{lat[bare].p99:.2f}", f"{result.added_p99:+.2f}", "", ""),
        ("  of which POST -> 202, p50 (ms)", f"{result.ingress_ms.p50:.2f}", "", "", "", "", ""),
        ("throughput (events/s)", f"{burst[via].per_second:.0f}",
         f"{burst[direct].per_second:.0f}", f"{burst[bare].per_second:.0f}", "",
         f">= {brokered.TARGET_EVENTS_PER_SECOND:g}/s", _verdict(result.throughput_met)),
        ("  202s from the ingress (events/s)", f"{burst[via].accepted_per_second:.0f}",
         "", "", "", "", ""),
    ]
    lines = _grid(rows)
    lines.append("latency: via broker = POST to the ingress -> arrival at the subscriber; "
                 "direct = POST -> response; added = via broker - direct to subscriber")
    lines.append("throughput: first POST -> last arrival (bare: last response)")
    if result.duplicates:
        lines.append(f"the subscriber saw {result.duplicates} redelivered events")
    spent = burst[via].cpu_seconds
    shares = sorted(spent.items(), key=lambda kv: -kv[1])
    lines.append(f"CPU during the burst via the broker ({burst[via].seconds:.2f} s wall), "
                 "ms per event: " + ", ".join(
                     f"{name} {seconds * 1000 / burst[via].events:.3f}"
                     for name, seconds in shares))
    return "\n".join(lines)


def signing_table(result: SigningResult) -> str:
    e2e, bare = result.end_to_end, result.bare
    header = ("", "end to end", "bare loop", "ratio", "target", "result")
    rows: list[tuple[str, ...]] = [
        header,
        ("signed transactions/s", f"{e2e.per_second:.0f}", f"{bare.per_second:.0f}",
         f"{result.ratio:.4f}x", f">= {signing.TARGET_RATIO:g}x", _verdict(result.met)),
        ("seconds", f"{e2e.seconds:.2f}", f"{bare.seconds:.3f}", "", "", ""),
        ("  of which inserted + published (s)", f"{e2e.published_seconds:.2f}", "", "", "",
         ""),
    ]
    lines = _grid(rows)
    lines.append(f"{e2e.transactions} transactions: end to end = insert into batch.tx_requests "
                 "-> batch reader -> broker -> sign-tx -> broker -> verify-tx -> the last "
                 "tx.verified read; bare loop = eventing.ethereum.sign in a loop "
                 f"({bare.seconds * 1e6 / bare.transactions:.0f} us each)")
    if e2e.rejected or e2e.redelivered_replies:
        lines.append(f"rejected: {e2e.rejected}; tx.signed replies beyond one per request: "
                     f"{e2e.redelivered_replies}")
    lease_rows: list[tuple[str, ...]] = [("lease-key, lease + release loops", "workers",
                                          "leases/s", "refused/s", "p50 (ms)", "p99 (ms)")]
    for lease in result.leases:
        lease_rows.append(("", str(lease.workers), f"{lease.per_second:.0f}",
                           f"{lease.refused / lease.seconds:.0f}", f"{lease.p50:.2f}",
                           f"{lease.p99:.2f}"))
    lines.append("")
    lines.extend(_grid(lease_rows))
    lines.append(f"{result.pool_keys} keys in the pool; latency = the key.lease request that "
                 "won a key; refused = 503 (no free key), asked again after "
                 f"{signing.REFUSED_PAUSE * 1000:g} ms")
    return "\n".join(lines)


def ledger_table(result: LedgerResult) -> str:
    header = ("", "ledger (events/s)", "bare loop (tx/s)", "ratio")
    lines = _grid([header] + [
        (f"{c} client{'s' if c > 1 else ''}", f"{result.ledger[c].per_second:.0f}",
         f"{result.bare[c].per_second:.0f}", f"{result.ratio(c):.2f}x")
        for c in sorted(result.ledger)])
    lines.append(f"round trips per ledger event: {result.round_trips_per_event:.2f} (bare loop: "
                 f"{result.bare_round_trips} per transaction: BEGIN, INSERTs, COMMIT)")
    return "\n".join(lines)


def table(report: Report) -> str:
    parts = []
    if report.functions is not None:
        parts.append(functions_table(report.functions))
    if report.broker is not None:
        parts.append(broker_table(report.broker))
    if report.signing is not None:
        parts.append(signing_table(report.signing))
    if report.ledger is not None:
        parts.append(ledger_table(report.ledger))
    if report.todo is not None:
        parts.append(report.todo.table())
    return "\n\n".join(parts)


def _ms(values: list[float]) -> list[float]:
    return [round(v, 3) for v in values]


def _functions_document(report: Functions) -> dict[str, Any]:
    functions: dict[str, Any] = {}
    for name in (report.subject, report.baseline):
        cold, seq = report.cold[name], report.sequential[name]
        functions[name] = {
            "cold_start_ms": {"median": cold.median, "min": cold.min, "max": cold.max,
                              "samples": _ms(cold.samples_ms)},
            "stop_ms": {"median": cold.stop_median, "samples": _ms(cold.stop_ms)},
            "sequential": {
                "requests": seq.requests,
                "seconds": seq.seconds,
                "requests_per_second": seq.per_second,
                "latency_ms": {"p50": seq.p50, "p99": seq.p99,
                               "mean": seq.seconds * 1000 / seq.requests,
                               "max": max(seq.latencies_ms),
                               "samples": _ms(seq.latencies_ms)},
            },
        }
    return {
        "subject": report.subject,
        "baseline": report.baseline,
        "functions": functions,
        "ratios": {
            "cold_start_median": report.ratio(lambda n: report.cold[n].median),
            "requests_per_second": report.ratio(lambda n: report.sequential[n].per_second),
            "latency_p50": report.ratio(lambda n: report.sequential[n].p50),
        },
    }


def _broker_document(result: BrokerResult) -> dict[str, Any]:
    via, direct, bare = brokered.VIA_BROKER, brokered.DIRECT, brokered.DIRECT_BARE
    keys = {via: "via_broker", direct: "direct_subscriber", bare: "direct_bare"}
    return {
        "latency_ms": {
            **{keys[k]: v.document() for k, v in result.latency.items()},
            "ingress_ack": result.ingress_ms.document(),
            "added_p50": result.added_p50,
            "added_p99": result.added_p99,
        },
        "throughput": {keys[k]: v.document() for k, v in result.throughput.items()},
        "duplicates": result.duplicates,
        "targets": {
            "added_latency_p50_ms": {"target": brokered.TARGET_ADDED_P50_MS,
                                     "value": result.added_p50, "met": result.latency_met},
            "events_per_second": {"target": brokered.TARGET_EVENTS_PER_SECOND,
                                  "value": result.throughput[via].per_second,
                                  "met": result.throughput_met},
        },
    }


def document(report: Report) -> dict[str, Any]:
    found: dict[str, Any] = {
        "timestamp": report.started.isoformat(),
        "machine": machine(),
        "parameters": report.parameters,
    }
    if report.functions is not None:
        found.update(_functions_document(report.functions))
    if report.broker is not None:
        found["broker"] = _broker_document(report.broker)
    if report.signing is not None:
        found["signing"] = report.signing.document()
    if report.ledger is not None:
        found["ledger"] = report.ledger.document()
    if report.todo is not None:
        found["todo"] = report.todo.document()
    return found


def write(report: Report, folder: Path = RESULTS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{report.started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(document(report), indent=2) + "\n")
    return path
