"""eventing/logs.py: one JSON line per record, and nothing of the runtime's own logging broken."""

import subprocess
import sys

# hypercorn (func-python's server) logs its start through a format of its own with
# `%(process)d`: configuring our logging must leave what that format reads.
HYPERCORN_LINE = """
import asyncio
from hypercorn.config import Config
from hypercorn.logging import Logger
from eventing import logs
logs.configure("test-function")
config = Config()
config.errorlog = "-"
asyncio.run(Logger(config).info("Running on http://127.0.0.1:1"))
"""


def test_given_our_logging_when_hypercorn_logs_its_start_then_no_logging_error():
    done = subprocess.run([sys.executable, "-c", HYPERCORN_LINE], capture_output=True,
                          text=True, timeout=60, check=True)

    output = done.stdout + done.stderr
    assert "Logging error" not in output
    assert "Running on http://127.0.0.1:1" in output
