"""sign-tx's side of lease-key: CloudEvents request/reply over HTTP, in binary mode.

lease-key is called directly (LEASE_KEY_URL), not through the broker: a lease is needed
now, for this request, and its answer is the reply. Every call carries a caller token
(`Authorization: Bearer`, HS256 from LEASE_KEY_TOKEN_SECRET, which only sign-tx and
lease-key hold): lease-key answers nobody else. What lease-key answers that is not a
lease becomes the edge's vocabulary, so the broker retries the request that needed it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx
from cloudevents.core.bindings.http import HTTPMessage, from_http_event, to_binary_event
from cloudevents.core.v1.event import CloudEvent
from pydantic import BaseModel, SecretStr, ValidationError

from eventing import callers
from eventing.errors import Conflict, EventworksError, Unavailable
from eventing.events import KEY_LEASE, KEY_LEASED, KEY_RELEASE, KeyLease, KeyLeased, KeyRelease

log = logging.getLogger(__name__)

SOURCE = "/eventworks/sign-tx"
# Who calls (the token's `sub`) and whom (its `aud`): lease-key answers sign-tx only.
CALLER = "sign-tx"
AUDIENCE = "lease-key"


class LeaseKeyFailed(Exception):
    """lease-key answered what it never should (a bug on one side): a 500 here."""


def _retry_after(response: httpx.Response) -> int:
    value = response.headers.get("retry-after", "1")
    return max(1, int(value)) if value.isascii() and value.isdigit() else 1


# lease-key's refusals → sign-tx's answer; the broker retries 409, 429 and 503.
REFUSALS: Mapping[int, Callable[[httpx.Response], EventworksError]] = {
    503: lambda r: Unavailable(f"no signing key to lease: {_detail(r)}",
                               retry_after=_retry_after(r)),
    429: lambda r: Unavailable(f"lease-key is busy: {_detail(r)}", retry_after=_retry_after(r)),
    409: lambda r: Conflict(f"lease-key refused the lease: {_detail(r)}"),
}


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.reason_phrase))
    except ValueError:
        return response.reason_phrase


class CallerTokens:
    """sign-tx's caller tokens for lease-key (eventing.callers.Callers checks them), minted
    from the secret the two share and reused for half their life: a token is never sent
    with less than half of it left."""

    def __init__(self, secret: SecretStr, *, clock: Callable[[], float] = time.time) -> None:
        self._secret = secret
        self._clock = clock
        self._token = ""
        self._renew_at = 0.0

    def header(self) -> str:
        now = self._clock()
        if now >= self._renew_at:
            self._token = callers.caller_token(self._secret.get_secret_value(), CALLER, AUDIENCE,
                                            now=now)
            self._renew_at = now + callers.CALLER_TOKEN_SECONDS / 2
        return f"Bearer {self._token}"


class LeaseKeyClient:
    """One HTTP client to lease-key for the function instance; made in `start`."""

    def __init__(self, url: str, worker_id: str, tokens: CallerTokens, *,
                 timeout: float) -> None:
        self.url = url
        self.worker_id = worker_id
        self._tokens = tokens
        self._timeout = timeout
        self._http = httpx.AsyncClient(timeout=timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _post(self, event_type: str, data: BaseModel, subject: str | None,
                    traceparent: str | None) -> httpx.Response:
        # A fresh attributes dict each time: the SDK writes its defaults into it.
        attributes: dict[str, Any] = {"specversion": "1.0", "id": str(uuid.uuid4()),
                                      "source": SOURCE, "type": event_type,
                                      "datacontenttype": "application/json"}
        if subject is not None:
            attributes["subject"] = subject
        if traceparent is not None:
            attributes["traceparent"] = traceparent
        message = to_binary_event(CloudEvent(attributes, data.model_dump(mode="json")))
        headers = {**message.headers, "authorization": self._tokens.header()}
        return await self._http.post(self.url, headers=headers, content=message.body)

    async def lease(self, ttl_seconds: int, request_id: str,
                    traceparent: str | None = None) -> KeyLeased:
        """A key of the pool, locked for this worker for `ttl_seconds`."""
        request = KeyLease(worker_id=self.worker_id, ttl_seconds=ttl_seconds,
                           request_id=request_id)
        try:
            response = await self._post(KEY_LEASE, request, request_id, traceparent)
        except httpx.HTTPError as exc:
            raise Unavailable(f"lease-key is not reachable: {type(exc).__name__}",
                              retry_after=1) from None
        if response.status_code != 200:
            refusal = REFUSALS.get(response.status_code)
            if refusal is not None:
                raise refusal(response)
            if response.status_code >= 500:
                raise Unavailable(f"lease-key failed ({response.status_code})", retry_after=1)
            raise LeaseKeyFailed(f"lease-key answered {response.status_code}: "
                                 f"{_detail(response)}")
        return self._leased(response)

    @staticmethod
    def _leased(response: httpx.Response) -> KeyLeased:
        try:
            event = from_http_event(HTTPMessage(headers=dict(response.headers),
                                                body=response.content))
            if event.get_type() != KEY_LEASED:
                raise LeaseKeyFailed(f"lease-key answered a {event.get_type()} event")
            return KeyLeased.model_validate(event.get_data())
        except (ValidationError, ValueError) as exc:
            raise LeaseKeyFailed(f"lease-key's answer is not a key.leased event: {exc}") \
                from None

    async def release(self, leased: KeyLeased, traceparent: str | None = None) -> None:
        """Best effort: a release that does not arrive leaves the key locked until its
        lease's TTL ends, which is the bound a crashed worker has anyway."""
        try:
            response = await self._post(
                KEY_RELEASE, KeyRelease(lease_id=leased.lease_id, address=leased.address),
                leased.address, traceparent)
            if response.status_code != 200:
                log.info("key not released", extra={"address": leased.address,
                                                    "lease_id": leased.lease_id,
                                                    "status": response.status_code})
        except httpx.HTTPError as exc:
            log.info("key not released", extra={"address": leased.address,
                                                "lease_id": leased.lease_id,
                                                "error": type(exc).__name__})

    def release_blocking(self, leases: Sequence[KeyLeased], *, within: float) -> bool:
        """Release `leases` for a caller that cannot await (func-python's synchronous
        `stop`), returning within `within` seconds: True when every release was done
        (answered or failed), False when the deadline came first.

        The releases run on an event loop of their own in a daemon thread, with a client
        of their own (this client's connections belong to the stopping loop, which is
        blocked while the caller waits). Joining the thread with a timeout bounds
        everything a release may wait for, name resolution included, which httpx's
        timeouts do not; a release left behind dies with the process, and its lease's
        TTL frees the key as it does for a crashed worker. They carry the same caller
        tokens as every other call (the caller does not mint any while it waits)."""
        if not leases:
            return True
        timeout = min(self._timeout, within)

        async def release_all() -> None:
            own = LeaseKeyClient(self.url, self.worker_id, self._tokens, timeout=timeout)
            try:
                outcomes = await asyncio.gather(*(own.release(leased) for leased in leases),
                                                return_exceptions=True)
                for outcome in outcomes:
                    if isinstance(outcome, BaseException):  # release() answers HTTP's own
                        log.warning("key not released", extra={
                            "error": type(outcome).__name__})
            finally:
                await own.aclose()

        thread = threading.Thread(target=asyncio.run, args=(release_all(),),
                                  name="sign-tx-release-at-stop", daemon=True)
        thread.start()
        thread.join(within)
        return not thread.is_alive()
