"""Where the local stack keeps its state: `.stack/` beside the checkout (or
EVENTWORKS_STACK_DIR), so two stacks can run side by side in tests."""

from __future__ import annotations

import json
import os
import secrets
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Layout:
    root: Path
    state: Path

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Layout:
        env = dict(os.environ if env is None else env)
        state = Path(env.get("EVENTWORKS_STACK_DIR") or ROOT / ".stack").resolve()
        return cls(root=ROOT, state=state)

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def env_file(self) -> Path:
        return self.state / "env"

    @property
    def state_file(self) -> Path:
        return self.state / "state.json"

    @property
    def ports_file(self) -> Path:
        return self.state / "ports.json"

    @property
    def functions(self) -> Path:
        return self.root / "functions"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def remembered_ports(self) -> dict[str, int]:
        """Ports of the last run: reused when free, so URLs stay the same across restarts."""
        try:
            return {k: int(v) for k, v in json.loads(self.ports_file.read_text()).items()}
        except (FileNotFoundError, ValueError):
            return {}

    def remember_ports(self, ports: dict[str, int]) -> None:
        self.ports_file.write_text(json.dumps(ports, indent=2, sort_keys=True))

    def dev_secret(self, name: str) -> str:
        """A development secret, made once per stack directory and kept in it."""
        path = self.state / "secrets.json"
        try:
            known: dict[str, str] = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            known = {}
        if name not in known:
            known[name] = secrets.token_urlsafe(24)
            path.write_text(json.dumps(known, indent=2))
            path.chmod(0o600)
        return known[name]


def env_file_text(values: dict[str, str], comment: str) -> str:
    """KEY=VALUE lines that a POSIX shell sources (`. .stack/env`) into the same values:
    each value shell-quoted where it needs it (a libpq DSN has spaces: unquoted, the shell
    would take `DATABASE_URL=user=postgres` and make `dbname=…`, `host=…` variables)."""
    lines = [f"# {comment}", *(f"{k}={shlex.quote(v)}" for k, v in sorted(values.items()))]
    return "\n".join(lines) + "\n"


def read_env_file(path: Path) -> dict[str, str]:
    """What `env_file_text` wrote: the values unquoted as the shell unquotes them."""
    values = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            # shlex.quote leaves a safe value bare and starts a quoted one with a quote; a
            # bare value is taken as it is (also what a stack started before quoting wrote).
            values[key] = "".join(shlex.split(value)) if value.startswith("'") else value
    return values
