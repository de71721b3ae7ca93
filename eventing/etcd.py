"""Where etcd is: ETCD_ENDPOINTS as functions and the stack read it."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator


def first_endpoint(endpoints: str) -> tuple[str, int] | None:
    """(host, port) of the first of `http://host:port,…`, or None if it is not one.
    aetcd talks to one endpoint, with no TLS: the first, over plain HTTP/2."""
    try:
        first = urlsplit(endpoints.split(",")[0].strip())
        port = first.port
    except ValueError:  # a port that is not a number or out of range
        return None
    if first.scheme != "http" or not first.hostname or port is None:
        return None
    return first.hostname, port


def _usable(value: str) -> str:
    if first_endpoint(value) is None:
        raise ValueError("must be http://host:port[,…] (the first one is used)")
    return value


# ETCD_ENDPOINTS as a settings field: refused at start unless its first entry is usable.
Endpoints = Annotated[str, AfterValidator(_usable)]
