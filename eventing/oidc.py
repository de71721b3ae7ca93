"""The sender's side of Knative's OIDC sender identity (feature `authentication-oidc`).

With the feature on, a SinkBinding gets an identity of its own (the ServiceAccount
`<name>-oidc-sources.knative.dev-sinkbinding`), and Knative keeps a token of it for the
sink's audience in a Secret that it mounts into the bound pods at `/oidc` (key `token`),
renewing it before it expires. A workload that posts to K_SINK sends it as
`Authorization: Bearer <token>`; the Broker checks it against its EventPolicies
(knative/base/gateway.yaml). Without the feature nothing is mounted and nothing is sent.

The file is read on every post: Knative rewrites it when it renews the token, and a read
of a small file costs microseconds next to the post itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

TOKEN_FILE: Final = Path("/oidc/token")


def authorization(token_file: Path = TOKEN_FILE) -> dict[str, str]:
    """The Authorization header of a post to K_SINK: the SinkBinding's OIDC token when
    Knative mounted one, else nothing."""
    try:
        token = token_file.read_text().strip()
    except OSError:
        return {}
    return {"authorization": f"Bearer {token}"} if token else {}
