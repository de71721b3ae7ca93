"""Coverage-guided fuzzing with atheris: python -m tests.fuzz TARGET [libFuzzer flags].

e.g. `python -m tests.fuzz siwe -runs=100000`, or with a corpus folder to keep what it
finds. The target's seeds and its regression inputs (tests/fuzz/regressions/TARGET/) are
written to a fresh folder and given to libFuzzer first. A failed check or any unexpected
exception ends the run with the input that caused it, written under .fuzz/artifacts/TARGET/
(ignored by git) unless `-artifact_prefix=` says otherwise: libFuzzer's default is the
current directory, where crash files end up committed by accident.
"""

from __future__ import annotations

import sys
import tempfile
import types
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["broker", "eventing", "tests"]):
    from tests.fuzz.command import ARTIFACTS, libfuzzer_args
    from tests.fuzz.seeds import SEEDS, regressions
    from tests.fuzz.targets import TARGETS, grammar

# Loaded by its file path (targets._grammar), which the import hook does not see.
for _value in vars(grammar).values():
    if isinstance(_value, types.FunctionType) and _value.__module__ == grammar.__name__:
        atheris.instrument_func(_value)


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in TARGETS:
        sys.exit(f"usage: python -m tests.fuzz {{{'|'.join(TARGETS)}}} [libFuzzer flags]")
    name = argv[1]
    seeds = Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-"))
    for i, seed in enumerate([*SEEDS[name](), *(p.read_bytes() for p in regressions(name))]):
        (seeds / f"seed-{i}").write_bytes(seed)
    (ARTIFACTS / name).mkdir(parents=True, exist_ok=True)
    atheris.Setup([argv[0], *libfuzzer_args(name, argv[2:], seeds)], TARGETS[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
