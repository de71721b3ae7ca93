"""python -m stack up|start|stop|env — see stack/supervisor.py."""

from __future__ import annotations

import sys

from stack import supervisor
from stack.layout import Layout

COMMANDS = {
    "up": supervisor.up,
    "start": supervisor.start,
    "stop": supervisor.stop,
}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in COMMANDS:
        print(f"usage: python -m stack {{{'|'.join(COMMANDS)}}}", file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](Layout.from_env())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
