"""libFuzzer's command line for a target (no atheris here: tests import it)."""

from __future__ import annotations

from pathlib import Path

# Where a failing input is written: libFuzzer's default is the working directory, the
# repository's root, where crash files were once committed by accident (.gitignore'd).
ARTIFACTS = Path(__file__).resolve().parents[2] / ".fuzz" / "artifacts"


def libfuzzer_args(name: str, args: list[str], seeds: Path) -> list[str]:
    """libFuzzer's command line: the flags, then the corpora (the first keeps what is
    found), then the seeds; artifacts under .fuzz/ unless the flags say where."""
    corpora = [a for a in args if not a.startswith("-")]
    flags = [a for a in args if a.startswith("-")]
    if not any(f.startswith("-artifact_prefix=") for f in flags):
        flags.append(f"-artifact_prefix={ARTIFACTS / name}/")
    return [*flags, *corpora, str(seeds)]
