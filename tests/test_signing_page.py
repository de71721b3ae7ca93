"""The signing page in headless Chromium, against the running stack's page server and
broker: a browser wallet stand-in (EIP-1193 `window.ethereum`, backed by a test key in
this process) signs, the page posts, and what arrives in the broker topic is read back
from Kafka. A pledge goes on through the Trigger `verify-tx-pledges` to the real
verify-tx, whose `bounty.funded` proves that the page signed exactly the typed data
verify-tx checks.

Chromium is Debian's (/usr/bin/chromium: `.ci/run` installs it when it is missing);
Playwright's own browser download does not work here.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data
from playwright.sync_api import Browser, BrowserContext, Page, Request, sync_playwright

from eventing import siwe
from stack import services
from tests.factory import pledge_typed_data
from tests.topic import Seen, Watch

pytestmark = pytest.mark.stack

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps dialling Google's hosts, which
# this machine's closed network refuses.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
TOPIC = f"knative-broker-{services.BROKER_NAMESPACE}-{services.BROKER_NAME}"
# verify-tx's allowed chains in the stack: VERIFY_CHAIN_IDS is not set, so its default, 1.
CHAIN_ID = 1
SOURCE = "/eventworks/signing-page"
WAIT_SECONDS = 30.0  # for an event to reach the topic; the first delivery joins a group
TEST_KEY = "0x" + "4e" * 32
REFUSED = {"code": 4001, "message": "User rejected the request."}

# An EIP-1193 provider whose every request is answered by the Python wallet below.
PROVIDER = """
window.ethereum = {
  isEventworksTestWallet: true,
  async request({ method, params }) {
    const answer = await window.__eventworksWallet(method, params ?? []);
    if (answer.error) {
      const error = new Error(answer.error.message);
      error.code = answer.error.code;
      throw error;
    }
    return answer.result;
  },
  on() {},
  removeListener() {},
};
"""


@dataclass
class Wallet:
    """A browser wallet stand-in holding one test key: it answers the EIP-1193 methods
    the page uses, refuses (code 4001) the methods in `refuse`, and records every call."""

    chain_id: int = CHAIN_ID
    refuse: frozenset[str] = frozenset()
    can_switch: bool = True
    bad_signature: bool = False
    calls: list[tuple[str, list[Any]]] = field(default_factory=list)
    account: Any = field(default_factory=lambda: Account.from_key(TEST_KEY))

    @property
    def address(self) -> str:
        return str(self.account.address)

    def request(self, method: str, params: list[Any]) -> dict[str, Any]:
        self.calls.append((method, params))
        if method in self.refuse:
            return {"error": REFUSED}
        answer = self._methods().get(method)
        if answer is None:
            return {"error": {"code": 4200, "message": f"unsupported method {method}"}}
        try:
            return {"result": answer(params)}
        except Refusal as refusal:
            return {"error": refusal.error}

    def _methods(self) -> Mapping[str, Callable[[list[Any]], Any]]:
        return {
            "eth_requestAccounts": lambda params: [self.address],
            "eth_accounts": lambda params: [self.address],
            "eth_chainId": lambda params: hex(self.chain_id),
            "wallet_switchEthereumChain": self._switch,
            "eth_signTypedData_v4": self._sign_typed_data,
            "personal_sign": self._personal_sign,
        }

    def _switch(self, params: list[Any]) -> None:
        if not self.can_switch:
            raise Refusal({"code": 4902, "message": "Unrecognized chain ID."})
        self.chain_id = int(params[0]["chainId"], 16)

    def _sign_typed_data(self, params: list[Any]) -> str:
        signer, document = params
        assert signer.lower() == self.address.lower()
        signed = self.account.sign_message(encode_typed_data(full_message=json.loads(document)))
        return "0x" + bytes(signed.signature).hex()

    def _personal_sign(self, params: list[Any]) -> str:
        message, signer = params
        assert signer.lower() == self.address.lower()
        if self.bad_signature:
            return "0x1234"
        signed = self.account.sign_message(encode_defunct(hexstr=message))
        return "0x" + bytes(signed.signature).hex()


class Refusal(Exception):
    def __init__(self, error: Mapping[str, Any]) -> None:
        super().__init__(error["message"])
        self.error = dict(error)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context()
    yield context
    context.close()


@dataclass
class Session:
    page: Page
    posts: list[Request]  # every POST the page made to /events


def open_page(context: BrowserContext, url: str, wallet: Wallet | None) -> Session:
    if wallet is not None:
        context.expose_function("__eventworksWallet", wallet.request)
        context.add_init_script(PROVIDER)
    page = context.new_page()
    posts: list[Request] = []
    page.on("request", lambda r: posts.append(r)
            if r.method == "POST" and urlsplit(r.url).path == "/events" else None)
    page.goto(url)
    return Session(page, posts)


def sign_and_wait(session: Session, button: str = "Connect wallet and sign") -> str:
    """Click the button; the page's final state, `sent` or `failed`."""
    session.page.get_by_role("button", name=button).click()
    session.page.wait_for_selector("body[data-state=sent], body[data-state=failed]")
    return str(session.page.evaluate("document.body.dataset.state"))


def pledge_url(stack_env: Mapping[str, str], bounty_id: str, **changes: str) -> str:
    query = {"bounty": bounty_id, "repository": "octo-org/hello-world", "issue": "12",
             "denomination": "USDC", "amount": "100.5", "amount_base_units": "100500000",
             "decimals": "6", "chain_id": str(CHAIN_ID), **changes}
    return f"{stack_env['SIGNING_PAGE_URL']}?{urlencode(query)}"


def siwe_message(address: str) -> str:
    now = datetime.now(UTC)
    return siwe.format(siwe.SiweMessage(
        domain="eventworks.example", address=siwe.eip55(address.lower()),
        statement="Link my GitHub account to this wallet.",
        uri="https://eventworks.example/link", chain_id=CHAIN_ID,
        nonce=siwe.new_nonce(), issued_at=now.isoformat().replace("+00:00", "Z"),
        expiration_time=(now + timedelta(minutes=10)).isoformat().replace("+00:00", "Z")))


def link_url(stack_env: Mapping[str, str], message: str) -> str:
    return f"{stack_env['SIGNING_PAGE_URL']}?{urlencode({'link': message})}"


def wait_for(watch: Watch, wanted: Mapping[str, Callable[[Seen], bool]]) -> dict[str, Seen]:
    """The first event of each name in `wanted` that its test accepts, read from the topic."""
    found: dict[str, Seen] = {}
    deadline = time.monotonic() + WAIT_SECONDS
    while len(found) < len(wanted) and time.monotonic() < deadline:
        for seen in watch.poll(200):
            for name, accepts in wanted.items():
                if name not in found and accepts(seen):
                    found[name] = seen
    missing = sorted(set(wanted) - set(found))
    assert not missing, f"not in the broker topic within {WAIT_SECONDS} s: {missing}"
    return found


@pytest.fixture
def watch(stack_env: Mapping[str, str]) -> Iterator[Watch]:
    watch = Watch(stack_env["KAFKA_BOOTSTRAP_SERVERS"], TOPIC)  # from now on
    yield watch
    watch.close()


def of_bounty(event_type: str, bounty_id: str) -> Callable[[Seen], bool]:
    return lambda seen: (seen.type == event_type and isinstance(seen.data, dict)
                         and seen.data.get("bounty_id") == bounty_id)


# -- what the page shows -------------------------------------------------------------------
HOSTILE = '<img src=x onerror="window.__pwned = 1"><b>bold</b>'


def test_given_a_pledge_link_when_the_page_loads_then_it_shows_the_bounty_as_text(
        stack_env, context):
    session = open_page(context, pledge_url(stack_env, HOSTILE), Wallet())
    page = session.page

    assert page.locator("#pledge-repository").inner_text() == "octo-org/hello-world"
    assert page.locator("#pledge-issue").inner_text() == "#12"
    assert page.locator("#pledge-amount").inner_text() == "100.5 USDC"
    assert page.locator("#pledge-base-units").inner_text() == "100500000"
    assert page.locator("#pledge-chain").inner_text() == str(CHAIN_ID)
    assert page.locator("#pledge-bounty").inner_text() == HOSTILE
    assert page.locator("img, b").count() == 0
    assert page.evaluate("window.__pwned") is None
    assert page.get_by_role("button", name="Connect wallet and sign").is_visible()
    assert not page.locator("#link").is_visible()


def test_given_a_link_link_when_the_page_loads_then_it_shows_the_siwe_message_as_text(
        stack_env, context):
    wallet = Wallet()
    # Not a statement EIP-4361 allows: the page shows whatever text its link carries.
    message = siwe_message(wallet.address).replace("Link my GitHub account", HOSTILE)
    session = open_page(context, link_url(stack_env, message), wallet)
    page = session.page

    assert page.locator("#link-message").inner_text() == message
    assert page.locator("img, b").count() == 0
    assert page.evaluate("window.__pwned") is None
    assert not page.locator("#pledge").is_visible()


def test_given_a_link_whose_amount_is_not_its_base_units_when_it_loads_then_nothing_can_be_signed(
        stack_env, context):
    session = open_page(context, pledge_url(stack_env, "b-1", amount_base_units="100000000"),
                        Wallet())
    page = session.page

    assert "amount 100.5 is not 100000000 base units" in page.get_by_role("alert").inner_text()
    assert page.get_by_role("button").count() == 0


def test_given_no_wallet_when_signing_then_the_page_says_so(stack_env, context):
    session = open_page(context, pledge_url(stack_env, "b-2"), None)

    session.page.get_by_role("button", name="Connect wallet and sign").click()

    assert "No browser wallet found" in session.page.get_by_role("alert").inner_text()
    assert session.posts == []


@pytest.fixture(scope="module")
def blank_page(browser: Browser, stack_env: Mapping[str, str]) -> Iterator[Page]:
    """The page with no request in its link: its modules, to call on plain values."""
    page = browser.new_page()
    page.goto(stack_env["SIGNING_PAGE_URL"])
    yield page
    page.close()


@pytest.mark.parametrize(("amount", "decimals", "base_units"), [
    ("0.5", 18, "500000000000000000"),
    ("100", 6, "100000000"),
    ("0", 0, "0"),
    ("0.000001", 6, "1"),
    ("123456789012345678901234567890.123456", 6, "123456789012345678901234567890123456"),
    ("1.1234567", 6, None),
])
def test_given_an_amount_when_the_page_converts_it_then_its_base_units_are_exact(
        blank_page, amount, decimals, base_units):
    converted = blank_page.evaluate(
        "async ([amount, decimals]) => (await import('./signing.js'))"
        ".baseUnitsOf(amount, decimals)", [amount, decimals])

    assert converted == base_units


def test_given_a_link_with_nothing_to_sign_when_it_loads_then_the_page_says_so(blank_page):
    assert blank_page.locator("#nothing").is_visible()
    assert blank_page.get_by_role("button").count() == 0


# -- signing -------------------------------------------------------------------------------
def test_given_a_pledge_when_the_funder_signs_then_verify_tx_funds_the_bounty(
        stack_env, context, watch):
    wallet = Wallet()
    bounty_id = f"page-{uuid.uuid4()}"
    session = open_page(context, pledge_url(stack_env, bounty_id), wallet)

    assert sign_and_wait(session) == "sent", session.page.get_by_role("alert").inner_text()

    found = wait_for(watch, {"signed": of_bounty("dev.eventworks.bounty.signed", bounty_id),
                             "funded": of_bounty("dev.eventworks.bounty.funded", bounty_id)})
    signed = found["signed"].data
    assert signed == {
        "bounty_id": bounty_id, "funder_address": wallet.address,
        "typed_data": pledge_typed_data(
            bounty_id=bounty_id, repository="octo-org/hello-world", issue_number=12,
            denomination="USDC", amount_base_units="100500000", chain_id=CHAIN_ID),
        "signature": signed["signature"], "repository": "octo-org/hello-world",
        "issue_number": 12, "denomination": "USDC", "amount_base_units": "100500000",
        "chain_id": CHAIN_ID}
    assert Account.recover_message(encode_typed_data(full_message=signed["typed_data"]),
                                   signature=signed["signature"]) == wallet.address
    assert found["funded"].data["funder_address"] == wallet.address
    assert found["signed"].id in session.page.get_by_role("status").inner_text()
    assert len(session.posts) == 1


def test_given_a_siwe_message_when_signed_then_identity_link_reaches_the_broker(
        stack_env, context, watch):
    wallet = Wallet()
    message = siwe_message(wallet.address)
    session = open_page(context, link_url(stack_env, message), wallet)

    assert sign_and_wait(session) == "sent", session.page.get_by_role("alert").inner_text()

    link = wait_for(watch, {"link": lambda seen: (
        seen.type == "dev.eventworks.identity.link" and isinstance(seen.data, dict)
        and seen.data.get("message") == message)})["link"]
    assert set(link.data) == {"message", "signature"}
    assert Account.recover_message(encode_defunct(text=message),
                                   signature=link.data["signature"]) == wallet.address


# -- what goes wrong -----------------------------------------------------------------------
@pytest.mark.parametrize(("flow", "method"), [("pledge", "eth_signTypedData_v4"),
                                              ("link", "personal_sign"),
                                              ("pledge", "eth_requestAccounts")])
def test_given_the_wallet_refuses_when_signing_then_the_page_says_so_and_posts_nothing(
        stack_env, context, flow, method):
    wallet = Wallet(refuse=frozenset({method}))
    url = (pledge_url(stack_env, f"page-{uuid.uuid4()}") if flow == "pledge"
           else link_url(stack_env, siwe_message(wallet.address)))
    session = open_page(context, url, wallet)

    assert sign_and_wait(session) == "failed"

    assert ("You refused the request in your wallet. Nothing was sent."
            in session.page.get_by_role("alert").inner_text())
    assert method in [called for called, _ in wallet.calls]
    assert session.posts == []
    assert session.page.get_by_role("button", name="Connect wallet and sign").is_enabled()


def test_given_the_wallet_on_another_chain_when_signing_then_the_page_has_it_switch_first(
        stack_env, context):
    wallet = Wallet(chain_id=5)
    session = open_page(context, pledge_url(stack_env, f"page-{uuid.uuid4()}"), wallet)

    assert sign_and_wait(session) == "sent", session.page.get_by_role("alert").inner_text()

    methods = [called for called, _ in wallet.calls]
    assert methods.index("wallet_switchEthereumChain") < methods.index("eth_signTypedData_v4")
    assert ("wallet_switchEthereumChain", [{"chainId": hex(CHAIN_ID)}]) in wallet.calls
    assert len(session.posts) == 1


def test_given_a_wallet_that_cannot_switch_chain_when_signing_then_the_page_names_both_chains(
        stack_env, context):
    wallet = Wallet(chain_id=5, can_switch=False)
    session = open_page(context, pledge_url(stack_env, f"page-{uuid.uuid4()}"), wallet)

    assert sign_and_wait(session) == "failed"

    assert (f"Your wallet is on chain 5; this pledge is for chain {CHAIN_ID}"
            in session.page.get_by_role("alert").inner_text())
    assert "eth_signTypedData_v4" not in [called for called, _ in wallet.calls]
    assert session.posts == []


def test_given_a_siwe_message_for_another_address_when_signing_then_nothing_is_signed(
        stack_env, context):
    wallet = Wallet()
    other = Account.from_key("0x" + "5f" * 32).address
    session = open_page(context, link_url(stack_env, siwe_message(other)), wallet)

    assert sign_and_wait(session) == "failed"

    assert f"This message is for {other}" in session.page.get_by_role("alert").inner_text()
    assert "personal_sign" not in [called for called, _ in wallet.calls]
    assert session.posts == []


def test_given_an_event_the_server_refuses_when_posted_then_the_page_shows_the_refusal(
        stack_env, context):
    wallet = Wallet(bad_signature=True)
    session = open_page(context, link_url(stack_env, siwe_message(wallet.address)), wallet)

    assert sign_and_wait(session) == "failed"

    alert = session.page.get_by_role("alert").inner_text()
    assert "the broker refused the event (400)" in alert
    assert "data.signature" in alert
    assert len(session.posts) == 1


def test_given_the_server_unreachable_when_sent_again_then_the_same_event_arrives_signed_once(
        stack_env, context, watch):
    wallet = Wallet()
    bounty_id = f"page-{uuid.uuid4()}"
    session = open_page(context, pledge_url(stack_env, bounty_id), wallet)
    session.page.route("**/events", lambda route: route.abort("connectionrefused"))

    assert sign_and_wait(session) == "failed"
    assert "could not be reached" in session.page.get_by_role("alert").inner_text()
    session.page.unroute("**/events")
    assert sign_and_wait(session, button="Send again") == "sent"

    signed = wait_for(watch, {"signed": of_bounty("dev.eventworks.bounty.signed", bounty_id)})
    assert [called for called, _ in wallet.calls].count("eth_signTypedData_v4") == 1
    first, again = (json.loads(post.post_data or "{}")["id"] for post in session.posts)
    assert first == again == signed["signed"].id
