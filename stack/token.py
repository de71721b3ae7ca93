"""`./taskw token -- USER [ROLE]`: a bearer token for the local stack, for curl and tests.

Signed HS256 with the stack's development secret: the running stack's `JWT_SECRET`
(`.stack/env`), else the one the stack will use (JWT_SECRET in the environment, else
`.stack/secrets.json`'s `jwt-secret`, made on first use). USER is the token's `sub`,
which eventworks reads as a GitHub login (eventing/auth.py); ROLE one of user (the
default), manager, accountant, admin.

    curl -H "Authorization: Bearer $(./taskw token -- alice)" ...
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from eventing import auth
from eventing.errors import Unauthorized
from stack.layout import Layout
from stack.supervisor import running_env


def secret(layout: Layout) -> str:
    running = running_env(layout)
    if running is not None and running.get("JWT_SECRET"):
        return running["JWT_SECRET"]
    if os.environ.get("JWT_SECRET"):
        return os.environ["JWT_SECRET"]
    layout.state.mkdir(parents=True, exist_ok=True)
    return layout.dev_secret("jwt-secret")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./taskw token --", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("user", help="the token's sub: a GitHub login")
    parser.add_argument("role", nargs="?", default=auth.DEFAULT_ROLE,
                        choices=sorted(auth.ROLES))
    parser.add_argument("--ttl", type=int, default=3600,
                        help="seconds until it expires (default 3600)")
    args = parser.parse_args(argv)
    try:
        auth.identity_of({"sub": args.user, "role": args.role})
    except Unauthorized as exc:
        parser.error(exc.detail)
    print(auth.sign(secret(Layout.from_env()), args.user, args.role, ttl_seconds=args.ttl))
    return 0


if __name__ == "__main__":
    sys.exit(main())
