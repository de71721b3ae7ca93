"""What the bot writes on GitHub: pure text from values.

Every bot comment starts with a hidden marker naming what it is about (`marker`), so a
retry that does not know the comment's id yet finds the comment on the issue and edits it
instead of posting a second one (see `bot.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

MARKER_PREFIX = "<!-- eventworks:"


def marker(key: str) -> str:
    return f"{MARKER_PREFIX}{key} -->"


def with_marker(key: str, text: str) -> str:
    return f"{marker(key)}\n{text}"


@dataclass(frozen=True)
class SignLink:
    """The signing page's contract: what it needs to show and sign a pledge."""

    page: str
    bounty_id: str
    repository: str
    issue_number: int
    denomination: str
    amount: str
    amount_base_units: int
    decimals: int
    chain_id: int

    def url(self) -> str:
        query = urlencode({
            "bounty": self.bounty_id, "repository": self.repository,
            "issue": self.issue_number, "denomination": self.denomination,
            "amount": self.amount, "amount_base_units": self.amount_base_units,
            "decimals": self.decimals, "chain_id": self.chain_id})
        return f"{self.page}?{query}"


@dataclass(frozen=True)
class BountyView:
    """A bounty as its one bot comment shows it."""

    status: str
    amount: str
    denomination: str
    funder_login: str
    sign_url: str
    funder_address: str | None = None
    solver_login: str | None = None
    pull_request: int | None = None
    tx_hash: str | None = None
    note: str | None = None


def bounty_comment(view: BountyView) -> str:
    offer = f"**{view.amount} {view.denomination}**"
    lines = {
        "requested": (f"💰 Bounty of {offer} offered by @{view.funder_login}.\n\n"
                      f"@{view.funder_login}, to fund it, [sign the pledge]({view.sign_url}) "
                      f"with your wallet."),
        "funded": (f"✅ Bounty of {offer} funded by @{view.funder_login} "
                   f"(`{view.funder_address}`).\n\nMerge a pull request that says "
                   f"`closes #<this issue>` to claim it."),
        "claimed": (f"🏁 Bounty of {offer} claimed by @{view.solver_login} with "
                    f"#{view.pull_request}; the payout is on its way."),
        "paid": (f"🎉 Bounty of {offer} paid to @{view.solver_login} for "
                 f"#{view.pull_request}: transaction `{view.tx_hash}`."),
        "cancelled": f"~~Bounty of {offer}~~ cancelled.",
    }[view.status]
    if view.status == "requested" and view.solver_login is not None:
        lines += (f"\n\n🏁 Claimed by @{view.solver_login} with #{view.pull_request}: "
                  f"paid as soon as the bounty is funded.")
    if view.note:
        lines += f"\n\n> {view.note}"
    return lines


def notice(login: str, text: str) -> str:
    return f"@{login} {text}"


def challenge(login: str, address: str, sign_url: str) -> str:
    return (f"@{login}, to link `{address}` to your GitHub account, "
            f"[sign this message]({sign_url}) with that wallet.")


def linked(login: str, address: str) -> str:
    return f"✅ @{login} is linked to `{address}`."


def missing(login: str) -> str:
    return (f"@{login}, there is a payout waiting for you but no wallet linked to your "
            f"account: comment `/link 0x…` with your Ethereum address.")


def unfunded_claim(login: str, pull_request: int) -> str:
    return (f"@{login}, #{pull_request} closes this issue, but its bounty has not been funded "
            f"yet: your claim is recorded, and it is paid to you when the bounty is funded.")


def taken_claim(login: str, pull_request: int, by: int) -> str:
    return (f"@{login}, #{pull_request} closes this issue, but its bounty was already claimed "
            f"by #{by}; a bounty is paid once.")
