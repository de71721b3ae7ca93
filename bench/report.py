"""What a run found: the printed table and the JSON document under bench/results/."""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from bench.measure import ColdStarts, Throughput

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Report:
    started: datetime  # UTC
    parameters: dict[str, Any]
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


def table(report: Report) -> str:
    header = ("", report.subject, report.baseline, "ratio")
    rows = [header] + [
        (label, f"{figure(report.subject):.1f}", f"{figure(report.baseline):.1f}",
         f"{report.ratio(figure):.2f}x")
        for label, figure in report.rows
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join([r[0].ljust(widths[0]),
                        *(c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True))])
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.append(f"ratio = {report.subject} / {report.baseline}: above 1 for times means "
                 "slower, below 1 for requests/s means slower")
    return "\n".join(lines)


def _ms(values: list[float]) -> list[float]:
    return [round(v, 3) for v in values]


def document(report: Report) -> dict[str, Any]:
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
        "timestamp": report.started.isoformat(),
        "machine": machine(),
        "parameters": report.parameters,
        "subject": report.subject,
        "baseline": report.baseline,
        "functions": functions,
        "ratios": {
            "cold_start_median": report.ratio(lambda n: report.cold[n].median),
            "requests_per_second": report.ratio(lambda n: report.sequential[n].per_second),
            "latency_p50": report.ratio(lambda n: report.sequential[n].p50),
        },
    }


def write(report: Report, folder: Path = RESULTS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{report.started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(document(report), indent=2) + "\n")
    return path
