"""Tier 1: what a source change, a pledge or a merge means for a bounty, on plain values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventing.denominations import DEFAULT_REGISTRY
from function.decide import (
    OUTSIDER,
    Cancel,
    Candidacy,
    Change,
    Claim,
    Explain,
    Fund,
    Ignore,
    Link,
    Open,
    Pledged,
    Policy,
    Refuse,
    Source,
    Stored,
    Taken,
    Terms,
    Tombstone,
    Unfunded,
    decide_claims,
    decide_funding,
    decide_source,
    references,
    settled_without_state,
)
from function.grammar import Amount, Reference

POLICY = Policy(DEFAULT_REGISTRY, Decimal(1_000_000),
                frozenset({"OWNER", "MEMBER", "COLLABORATOR"}))
T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
USDC_100 = Amount("USDC", Decimal(100), 100_000_000, 6)
USDC_250 = Amount("USDC", Decimal(250), 250_000_000, 6)
ADDRESS = "0x" + "ab" * 20


def source(body: str = "$USDC:100$", action: str = "created", *, kind: str = "comment",
           author_type: str = "User", sender_type: str = "User",
           association: str = "OWNER", at: datetime = T0) -> Source:
    return Source(kind=kind, action=action, body=body, author_type=author_type,  # type: ignore[arg-type]
                  sender_type=sender_type, author_association=association, updated_at=at)


def stored(status: str = "requested", amount: Amount | None = USDC_100, *,
           deleted: bool = False, at: datetime = T0) -> Stored:
    return Stored(status=status, amount=amount, deleted=deleted,  # type: ignore[arg-type]
                  source_updated_at=at)


# -- a source changed -------------------------------------------------------------------------
def test_given_new_comment_with_pattern_when_decided_then_open():
    assert decide_source(source(), None, POLICY) == Open(USDC_100)


@pytest.mark.parametrize("kind", ["issue", "pull_request"])
def test_given_issue_or_pr_body_opened_with_pattern_when_decided_then_open(kind):
    assert decide_source(source(action="opened", kind=kind), None, POLICY) == Open(USDC_100)


@pytest.mark.parametrize(("author", "sender"), [("Bot", "User"), ("User", "Bot")])
def test_given_a_bot_when_decided_then_ignored(author, sender):
    decision = decide_source(source(author_type=author, sender_type=sender), None, POLICY)
    assert isinstance(decision, Ignore)


@pytest.mark.parametrize("association", ["NONE", "CONTRIBUTOR", "FIRST_TIMER"])
def test_given_an_outsider_when_decided_then_explained_not_opened(association):
    assert decide_source(source(association=association), None, POLICY) == Explain(OUTSIDER)


def test_given_configured_associations_when_contributor_offers_then_open():
    policy = Policy(DEFAULT_REGISTRY, Decimal(1000), frozenset({"CONTRIBUTOR"}))
    assert decide_source(source(association="CONTRIBUTOR"), None, policy) == Open(USDC_100)


def test_given_malformed_pattern_when_decided_then_explained():
    decision = decide_source(source("$USDC:1,000$"), None, POLICY)
    assert isinstance(decision, Explain)
    assert "thousands" in decision.text


def test_given_edit_with_new_amount_when_decided_then_change_sets_not_adds():
    decision = decide_source(source("$USDC:250$", "edited", at=T0 + timedelta(seconds=1)),
                             stored(), POLICY)
    assert decision == Change(USDC_250)


def test_given_edit_with_same_terms_when_decided_then_ignored():
    decision = decide_source(source("now with more words $USDC:100$", "edited"),
                             stored(), POLICY)
    assert isinstance(decision, Ignore)


@pytest.mark.parametrize("status", ["requested", "funded"])
def test_given_edit_removing_the_pattern_when_decided_then_cancel(status):
    decision = decide_source(source("never mind", "edited"), stored(status), POLICY)
    assert decision == Cancel("the bounty pattern was removed")


def test_given_edit_breaking_the_pattern_when_decided_then_cancel_saying_why():
    decision = decide_source(source("$USDC:1,000$", "edited"), stored(), POLICY)
    assert isinstance(decision, Cancel)
    assert "thousands" in decision.reason


@pytest.mark.parametrize("status", ["requested", "funded"])
def test_given_delete_of_a_live_bounty_when_decided_then_cancel(status):
    decision = decide_source(source(action="deleted"), stored(status), POLICY)
    assert isinstance(decision, Cancel)


@pytest.mark.parametrize("status", ["claimed", "paid"])
def test_given_delete_or_edit_of_a_claimed_bounty_when_decided_then_ignored(status):
    assert isinstance(decide_source(source(action="deleted"), stored(status), POLICY), Ignore)
    assert isinstance(decide_source(source("$USDC:5$", "edited"), stored(status), POLICY),
                      Ignore)


def test_given_delete_before_anything_when_decided_then_tombstone():
    assert decide_source(source(action="deleted"), None, POLICY) == Tombstone()


def test_given_tombstone_when_created_arrives_late_then_ignored():
    tomb = stored("cancelled", None, deleted=True)
    assert isinstance(decide_source(source(), tomb, POLICY), Ignore)
    assert isinstance(decide_source(source(action="edited"), tomb, POLICY), Ignore)


def test_given_edit_before_created_when_decided_then_open_and_late_created_ignored():
    edit = source("$USDC:250$", "edited", at=T0 + timedelta(seconds=1))
    assert decide_source(edit, None, POLICY) == Open(USDC_250)
    late = decide_source(source(at=T0), stored(amount=USDC_250, at=T0 + timedelta(seconds=1)),
                         POLICY)
    assert isinstance(late, Ignore)


def test_given_older_edit_arriving_after_newer_when_decided_then_stale_ignored():
    decision = decide_source(source("$USDC:5$", "edited", at=T0),
                             stored(amount=USDC_250, at=T0 + timedelta(seconds=5)), POLICY)
    assert decision == Ignore("stale: a newer version of the source was applied")


def test_given_cancelled_bounty_when_pattern_edited_back_then_open_again():
    decision = decide_source(source("$USDC:250$", "edited"), stored("cancelled"), POLICY)
    assert decision == Open(USDC_250)


def test_given_link_comment_when_decided_then_link_for_anyone():
    decision = decide_source(source(f"/link {ADDRESS}", association="NONE"), None, POLICY)
    assert decision == Link(ADDRESS)


def test_given_bad_link_when_decided_then_explained():
    assert isinstance(decide_source(source("/link 0x12"), None, POLICY), Explain)


def test_given_link_in_an_issue_body_or_an_edit_when_decided_then_ignored():
    assert isinstance(decide_source(source(f"/link {ADDRESS}", "opened", kind="issue"),
                                    None, POLICY), Ignore)
    assert isinstance(decide_source(source(f"/link {ADDRESS}", "edited"), None, POLICY),
                      Ignore)


@given(body=st.text(), action=st.sampled_from(["created", "edited", "deleted", "opened",
                                               "labeled"]),
       status=st.sampled_from([None, "requested", "funded", "claimed", "paid", "cancelled"]))
def test_given_any_change_when_decided_then_claimed_bounties_never_change(body, action, status):
    decision = decide_source(source(body, action), stored(status) if status else None, POLICY)
    if status in ("claimed", "paid"):
        assert isinstance(decision, Ignore)
    if status is None:
        assert not isinstance(decision, Change | Cancel)


# -- funding ---------------------------------------------------------------------------------
TERMS = Terms("Codertocat/Hello-World", 1, USDC_100, 1)
PLEDGE = Pledged("codertocat/hello-world", 1, "USDC", 100_000_000, 1)


def test_given_pledge_for_the_stored_terms_when_decided_then_funded():
    assert decide_funding("requested", TERMS, PLEDGE) == Fund(claim=False)


@pytest.mark.parametrize("pledge", [
    Pledged("Codertocat/Hello-World", 1, "USDC", 1, 1),          # another amount
    Pledged("Codertocat/Hello-World", 2, "USDC", 100_000_000, 1),  # another issue
    Pledged("Codertocat/Hello-World", 1, "DAI", 100_000_000, 1),   # another denomination
    Pledged("Codertocat/Hello-World", 1, "USDC", 100_000_000, 5),  # another chain
    Pledged("evil/repo", 1, "USDC", 100_000_000, 1),
    Pledged(None, None, None, None, None),                        # no terms: not trusted
])
def test_given_pledge_for_other_terms_when_decided_then_refused(pledge):
    assert isinstance(decide_funding("requested", TERMS, pledge), Refuse)


def test_given_unknown_or_settled_bounty_when_funded_then_ignored_or_refused():
    assert isinstance(decide_funding(None, None, PLEDGE), Ignore)
    assert isinstance(decide_funding("funded", TERMS, PLEDGE), Ignore)
    assert isinstance(decide_funding("paid", TERMS, PLEDGE), Ignore)
    assert isinstance(decide_funding("cancelled", TERMS, PLEDGE), Refuse)


# -- claims ----------------------------------------------------------------------------------
def test_given_merged_pr_references_when_read_then_own_repository_filled_in():
    assert references("Fix", "Fixes #1, fixes octo/x#2 and #3", "me/repo") == (
        Reference("me/repo", 1), Reference("octo/x", 2))


def test_given_funded_unfunded_taken_and_cancelled_bounties_when_claimed_then_each_told():
    outcomes = decide_claims(7, [Candidacy("a", "funded", None),
                                 Candidacy("b", "requested", None),
                                 Candidacy("c", "claimed", 3),
                                 Candidacy("d", "cancelled", None),
                                 Candidacy("e", "paid", 7)])
    assert outcomes == (Claim("a"), Unfunded("b"), Taken("c", 3))


# -- a merge and the pledge in either order ----------------------------------------------------
def test_given_a_merge_before_the_pledge_when_claims_decided_then_claim_recorded_pending():
    assert decide_claims(7, [Candidacy("b", "requested", None)]) == (Unfunded("b"),)
    # the same merge delivered again: the same pending claim, nothing new
    assert decide_claims(7, [Candidacy("b", "requested", 7)]) == (Unfunded("b"),)


def test_given_a_pending_claim_when_another_pr_merges_then_taken_by_the_first():
    assert decide_claims(8, [Candidacy("b", "requested", 7)]) == (Taken("b", 7),)


def test_given_a_pending_claim_when_the_pledge_arrives_then_funded_and_claimed():
    assert decide_funding("requested", TERMS, PLEDGE, pending_claim=7) == Fund(claim=True)
    assert decide_funding("requested", TERMS, PLEDGE) == Fund(claim=False)


def test_given_a_pending_claim_when_a_pledge_for_other_terms_arrives_then_refused():
    other = Pledged("codertocat/hello-world", 1, "USDC", 1, 1)
    assert isinstance(decide_funding("requested", TERMS, other, pending_claim=7), Refuse)


def test_given_a_pending_claim_on_a_cancelled_bounty_when_funded_then_refused_never_claimed():
    assert isinstance(decide_funding("cancelled", TERMS, PLEDGE, pending_claim=7), Refuse)


def test_given_a_claimed_bounty_when_the_pledge_is_delivered_again_then_ignored():
    assert isinstance(decide_funding("claimed", TERMS, PLEDGE, pending_claim=None), Ignore)


@pytest.mark.parametrize("merge_first", [True, False])
def test_given_a_merge_and_a_pledge_in_either_order_each_twice_then_claimed_once_for_the_pr(
        merge_first):
    """The bounty's state as func.py keeps it, folded over the two decisions."""
    status, claimed_by, claims = "requested", None, 0

    def merge() -> None:
        nonlocal status, claimed_by, claims
        for outcome in decide_claims(7, [Candidacy("b", status, claimed_by)]):  # type: ignore[arg-type]
            if isinstance(outcome, Claim):
                status, claimed_by, claims = "claimed", 7, claims + 1
            elif isinstance(outcome, Unfunded):
                claimed_by = 7

    def pledge() -> None:
        nonlocal status, claims
        decision = decide_funding(status, TERMS, PLEDGE,  # type: ignore[arg-type]
                                  claimed_by if status == "requested" else None)
        if isinstance(decision, Fund):
            status = "claimed" if decision.claim else "funded"
            claims += decision.claim

    for step in (merge, merge, pledge, pledge) if merge_first else (pledge, pledge, merge, merge):
        step()
    assert (status, claimed_by, claims) == ("claimed", 7, 1)


# -- what needs no state --------------------------------------------------------------------
STORES = [None, stored(), stored("funded"), stored("claimed"), stored("cancelled"),
          stored(deleted=True), stored(at=T0 + timedelta(hours=1))]


@pytest.mark.parametrize("change", [
    source(author_type="Bot"), source(sender_type="Bot"),
    source(action="labeled"), source("no bounty here", action="pinned"),
    source("no bounty here"), source("no bounty here", kind="issue", action="opened"),
    source("/link 0xab", kind="issue", action="opened"),
])
def test_given_a_change_settled_without_state_when_decided_with_any_store_then_ignored(change):
    assert isinstance(settled_without_state(change, POLICY), Ignore)
    assert all(isinstance(decide_source(change, known, POLICY), Ignore) for known in STORES)


@pytest.mark.parametrize("change", [
    source(), source("$FOO:100$"), source(f"/link {ADDRESS}"), source("/link 0xab"),
    source("no bounty here", action="edited"), source(action="deleted"),
    source("no bounty here", action="deleted"),
])
def test_given_a_change_whose_meaning_depends_on_the_store_when_screened_then_not_settled(
        change):
    assert settled_without_state(change, POLICY) is None


@given(body=st.text(max_size=80), action=st.sampled_from(["created", "opened", "edited",
                                                          "deleted", "labeled"]),
       kind=st.sampled_from(["comment", "issue", "pull_request"]),
       association=st.sampled_from(["OWNER", "NONE"]), known=st.sampled_from(STORES))
def test_given_any_change_settled_without_state_when_decided_then_ignored_whatever_is_stored(
        body, action, kind, association, known):
    change = source(body, action, kind=kind, association=association)
    if settled_without_state(change, POLICY) is not None:
        assert isinstance(decide_source(change, known, POLICY), Ignore)
