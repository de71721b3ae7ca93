"""JSON-lines logging with the event's id, type, source and traceparent.

The edge binds the event being handled to a context variable; every log line
written while it is handled carries those fields, whichever module logs it.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

from pythonjsonlogger.json import JsonFormatter

if TYPE_CHECKING:
    from eventing.settings import EnvSettings

S = TypeVar("S", bound="EnvSettings")

_event_fields: ContextVar[Mapping[str, str]] = ContextVar(
    "event_fields", default=MappingProxyType({}))


class _EventFields(logging.Filter):
    def __init__(self, function: str) -> None:
        super().__init__()
        self._function = function

    def filter(self, record: logging.LogRecord) -> bool:
        record.function = self._function
        for key, value in _event_fields.get().items():
            setattr(record, key, value)
        return True


def configure(function: str, level: str = "INFO") -> None:
    """Route every logger to one JSON-lines handler on stderr.

    func-python calls logging.basicConfig at import; its plain handler is replaced
    so that a function's output is one JSON object a line, machine-readable.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    handler.addFilter(_EventFields(function))
    # No line of ours names its caller or thread: skip collecting them for every record
    # (the logging docs' "Optimization"; it was a tenth of an ignored event's cost). The
    # process id stays: hypercorn's own log format has `%(process)d`, and it is one getpid.
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Hypercorn gives its loggers plain-text handlers of their own and lets them
    # propagate too: every server line would be written twice, once not as JSON.
    for name in ("hypercorn.error", "hypercorn.access"):
        logging.getLogger(name).handlers.clear()


@contextlib.contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Add these fields to every log line written inside the block."""
    clean = {k: str(v) for k, v in fields.items() if v is not None}
    token = _event_fields.set({**_event_fields.get(), **clean})
    try:
        yield
    finally:
        _event_fields.reset(token)


def started(process: str, settings_type: type[S], env: Mapping[str, str]) -> S | None:
    """A background process's settings, with its JSON logs configured at their level;
    None, logged, when the environment does not describe a runnable process."""
    from eventing.settings import SettingsError

    try:
        settings = settings_type.from_env(env)
    except SettingsError as exc:
        configure(process)
        logging.getLogger(process).error(f"{process} not started", extra={"error": str(exc)})
        return None
    configure(process, getattr(settings, "log_level", "INFO"))
    return settings
