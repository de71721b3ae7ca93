"""Coverage-guided fuzzing with atheris: python -m tests.fuzz TARGET [libFuzzer flags].

e.g. `python -m tests.fuzz siwe -runs=100000`, or with a corpus folder to keep what it
finds. The target's seeds are written to a fresh folder and given to libFuzzer first.
A failed check or any unexpected exception ends the run with the input that caused it.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["broker", "eventing", "tests"]):
    from tests.fuzz.seeds import SEEDS
    from tests.fuzz.targets import TARGETS


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in TARGETS:
        sys.exit(f"usage: python -m tests.fuzz {{{'|'.join(TARGETS)}}} [libFuzzer flags]")
    name = argv[1]
    seeds = Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-"))
    for i, seed in enumerate(SEEDS[name]()):
        (seeds / f"seed-{i}").write_bytes(seed)
    corpora = [a for a in argv[2:] if not a.startswith("-")]
    flags = [a for a in argv[2:] if a.startswith("-")]
    atheris.Setup([argv[0], *flags, *corpora, str(seeds)], TARGETS[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
