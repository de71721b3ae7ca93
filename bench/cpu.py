"""Where the CPU went during a burst: per process (the private ingress, tansu, the
rest of the stack) and, inside this process, per thread group (the dispatcher's
poll/commit loop, its delivery workers, the subscriber).

Thread CPU comes from the kernel (psutil's per-thread user+system time), named by
`threading`'s native ids; what threads that ended inside the window spent is the
process total minus the threads still alive ("ended threads").
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass

import psutil

from stack.layout import Layout
from stack.processes import StateFile, alive


def _group(thread_name: str) -> str:
    if thread_name.startswith("trigger-"):
        return "dispatcher poll/commit loop"
    if thread_name.startswith("delivery"):
        return "dispatcher delivery workers"
    if "kafka" in thread_name.lower():
        return "dispatcher kafka-python threads"
    if thread_name.startswith("subscriber") or "process_request_thread" in thread_name:
        return "subscriber"
    if thread_name == "MainThread":
        return "bench main thread"
    return "other threads"


@dataclass(frozen=True)
class Sample:
    threads: dict[int, tuple[str, float]]  # native id → (group, cpu seconds)
    own_total: float
    processes: dict[str, float]             # label → cpu seconds


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def stack_processes(layout: Layout) -> dict[str, int]:
    """The running stack's tansu and every other child, read from its state file."""
    _, children = StateFile(layout.state_file).read()
    return {("kafka (tansu)" if c.name == "kafka" else f"stack {c.name}"): c.pid
            for c in children if alive(c)}


def sample(processes: Mapping[str, int]) -> Sample:
    names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    me = psutil.Process()
    threads = {t.id: (_group(names.get(t.id, "")), t.user_time + t.system_time)
               for t in me.threads()}
    seen: dict[str, float] = {}
    for label, pid in processes.items():
        try:
            seen[label] = _cpu(psutil.Process(pid))
        except psutil.Error:
            continue
    return Sample(threads, _cpu(me), seen)


def spent(before: Sample, after: Sample) -> dict[str, float]:
    """CPU seconds per group between two samples; the stack's idle processes are summed
    into one "rest of the stack" figure."""
    groups: dict[str, float] = {}
    attributed = 0.0
    for tid, (group, seconds) in after.threads.items():
        delta = seconds - before.threads.get(tid, (group, 0.0))[1]
        groups[group] = groups.get(group, 0.0) + delta
        attributed += delta
    groups["ended threads"] = max(0.0, (after.own_total - before.own_total) - attributed)
    for label, seconds in after.processes.items():
        if label not in before.processes:
            continue
        delta = seconds - before.processes[label]
        key = "rest of the stack" if label.startswith("stack ") else label
        groups[key] = groups.get(key, 0.0) + delta
    return {k: round(v, 4) for k, v in groups.items() if v > 0}

