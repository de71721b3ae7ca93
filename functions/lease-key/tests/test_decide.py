"""Tier 1: which key a lease gets, and what renew and release mean, on plain values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from function.decide import (
    MAX_FAILURES_PER_LEASE,
    Acquire,
    EventRef,
    Gone,
    Holder,
    Holding,
    IdInUse,
    LeaseRequest,
    Lock,
    NoFreeKey,
    NotHeld,
    Pool,
    PoolKey,
    Release,
    Renewed,
    Replay,
    decide_lease,
    decide_release,
    decide_renew,
    expired_holders,
    expires_at,
)

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
A, B, C = ("0x" + c * 40 for c in "abc")


def request(worker="w1", ttl=10, request_id="r1", event_id="e1") -> LeaseRequest:
    return LeaseRequest(worker_id=worker, ttl_seconds=ttl, request_id=request_id,
                        event=EventRef("/eventworks/sign-tx", event_id))


def holding(address, worker="w1", ttl=10, request_id="r1", event_id="e1", lease_id=7):
    return Holding(address=address, worker_id=worker, request_id=request_id,
                   event=EventRef("/eventworks/sign-tx", event_id), lease_id=lease_id,
                   ttl_seconds=ttl, acquired_at=T0)


def lock(address, token, **kw) -> Lock:
    h = holding(address, **kw)
    return Lock(address=address, fencing_token=token, lease_id=h.lease_id, holding=h)


def pool(keys=(), locks=(), holders=()) -> Pool:
    return Pool(keys=tuple(PoolKey(a, used) for a, used in keys),
                locks={lk.address.lower(): lk for lk in locks},
                holders={h.holding.address.lower(): h for h in holders})


def test_given_free_keys_when_leased_then_least_recently_used_wins():
    decision = decide_lease(request(), pool(keys=[(A, 30), (B, 10), (C, 20)]))
    assert isinstance(decision, Acquire)
    assert decision.key == PoolKey(B, 10)
    assert decision.expired == ()
    assert decision.replaces is None


def test_given_equal_last_used_when_leased_then_lowest_address_wins():
    decision = decide_lease(request(), pool(keys=[(C, 5), (A, 5), (B, 5)]))
    assert isinstance(decision, Acquire)
    assert decision.key.address == A


def test_given_lost_races_when_leased_with_spread_then_one_of_the_least_recently_used():
    keys = [(A, 30), (B, 10), (C, 20)]
    decisions = [decide_lease(request(), pool(keys=keys), spread=2, pick=p) for p in range(4)]
    assert {d.key.address for d in decisions if isinstance(d, Acquire)} == {B, C}


def test_given_spread_wider_than_free_keys_when_leased_then_still_a_free_key():
    decision = decide_lease(request(event_id="e2"), pool(keys=[(A, 1), (B, 2)],
                                                        locks=[lock(A, 100)]),
                            spread=64, pick=63)
    assert isinstance(decision, Acquire)
    assert decision.key.address == B


def test_given_lru_key_locked_when_leased_then_next_free_one():
    decision = decide_lease(request(event_id="e2"),
                            pool(keys=[(A, 1), (B, 2)], locks=[lock(A, 100)]))
    assert isinstance(decision, Acquire)
    assert decision.key.address == B


def test_given_address_case_differs_when_leased_then_lock_still_counts():
    upper = "0x" + "A" * 40
    decision = decide_lease(request(event_id="e2"),
                            pool(keys=[(upper, 1)], locks=[lock(A, 100)]))
    assert isinstance(decision, NoFreeKey)


def test_given_every_key_locked_when_leased_then_no_free_key_retry_in_a_second():
    decision = decide_lease(request(event_id="e9"),
                            pool(keys=[(A, 1), (B, 2)],
                                 locks=[lock(A, 100), lock(B, 101, event_id="e2")]))
    assert decision == NoFreeKey("all 2 keys of the pool are leased", retry_after=1)


def test_given_empty_pool_when_leased_then_no_free_key_says_import_keys():
    decision = decide_lease(request(), pool())
    assert isinstance(decision, NoFreeKey)
    assert "empty" in decision.reason


def test_given_event_already_holding_a_lock_when_redelivered_then_replay_that_lock():
    held = lock(B, 100)
    decision = decide_lease(request(), pool(keys=[(A, 1), (B, 2)], locks=[held]))
    assert decision == Replay(held)


def test_given_event_holding_a_lock_when_asked_with_other_data_then_id_in_use():
    held = lock(B, 100)
    decision = decide_lease(request(worker="w2"), pool(keys=[(A, 1), (B, 2)], locks=[held]))
    assert decision == IdInUse(holding(B))


def test_given_same_event_id_from_another_source_when_leased_then_not_a_replay():
    other = LeaseRequest("w1", 10, "r1", EventRef("/somewhere/else", "e1"))
    decision = decide_lease(other, pool(keys=[(A, 1), (B, 2)], locks=[lock(B, 100)]))
    assert isinstance(decision, Acquire)
    assert decision.key.address == A


def test_given_holder_without_lock_when_leased_then_its_expiry_is_recorded():
    gone = Holder(holding(A, worker="dead", event_id="e0"), revision=50)
    decision = decide_lease(request(), pool(keys=[(A, 50), (B, 60)], holders=[gone]))
    assert isinstance(decision, Acquire)
    assert decision.key.address == A          # A is least recently used, and free again
    assert decision.replaces == gone          # its holder record is overwritten
    assert decision.expired == (gone,)


def test_given_expired_holder_of_another_key_when_leased_then_recorded_not_replaced():
    gone = Holder(holding(B, worker="dead", event_id="e0"), revision=50)
    decision = decide_lease(request(), pool(keys=[(A, 1), (B, 50)], holders=[gone]))
    assert isinstance(decision, Acquire)
    assert decision.key.address == A
    assert decision.replaces is None
    assert decision.expired == (gone,)


def test_given_holder_with_its_live_lock_then_not_expired():
    assert expired_holders(pool(keys=[(A, 50)], locks=[lock(A, 50)],
                                holders=[Holder(holding(A), revision=50)])) == ()


def test_given_holder_of_an_older_lock_than_the_live_one_then_expired():
    old = Holder(holding(A, event_id="old"), revision=40)
    assert expired_holders(pool(keys=[(A, 50)], locks=[lock(A, 50)], holders=[old])) == (old,)


def test_given_many_expired_holders_when_leased_then_capped_and_chosen_key_first():
    addresses = [f"0x{i:040x}" for i in range(1, 60)]
    holders = [Holder(holding(a, event_id=f"e{i}"), revision=100 + i)
               for i, a in enumerate(addresses)]
    decision = decide_lease(request(event_id="new"),
                            pool(keys=[(a, 200 - i) for i, a in enumerate(addresses)],
                                 holders=holders))
    assert isinstance(decision, Acquire)
    assert decision.key.address == addresses[-1]
    assert len(decision.expired) == MAX_FAILURES_PER_LEASE
    assert decision.expired[0] == decision.replaces == holders[-1]


def test_given_live_lock_and_positive_ttl_when_renewed_then_renewed():
    held = lock(A, 50, lease_id=7)
    assert decide_renew(7, 10, held) == Renewed(held, 10)


def test_given_no_lock_when_renewed_then_gone():
    assert isinstance(decide_renew(7, 10, None), Gone)


def test_given_keep_alive_answering_zero_when_renewed_then_gone_says_expired():
    decision = decide_renew(0x7, 0, lock(A, 50, lease_id=7))
    assert decision == Gone("lease 7 has expired or was released")


def test_given_lock_of_another_lease_when_renewed_or_released_then_gone_or_not_held():
    other = lock(A, 50, lease_id=8)
    assert isinstance(decide_renew(7, 10, other), Gone)
    assert decide_release(7, other) == NotHeld()


def test_given_lock_of_this_lease_when_released_then_release_it():
    held = lock(A, 50, lease_id=7)
    assert decide_release(7, held) == Release(held)


def test_given_no_lock_when_released_then_not_held():
    assert decide_release(7, None) == NotHeld()


def test_given_now_and_ttl_when_expiry_computed_then_now_plus_ttl():
    assert expires_at(T0, 15) == T0 + timedelta(seconds=15)


addresses = st.integers(min_value=1, max_value=2**160 - 1).map(lambda n: f"0x{n:040x}")


@given(keys=st.dictionaries(addresses, st.integers(min_value=0, max_value=10**6),
                            max_size=20),
       locked=st.sets(st.integers(min_value=0, max_value=19)),
       lost=st.integers(min_value=0, max_value=7), pick=st.integers(min_value=0))
def test_given_any_pool_when_leased_then_a_free_key_among_the_least_recently_used(
        keys, locked, lost, pick):
    ordered = sorted(keys.items())
    locks = [lock(a, 1000 + i, event_id=f"l{i}") for i, (a, _) in enumerate(ordered)
             if i in locked]
    decision = decide_lease(request(event_id="fresh"), pool(keys=ordered, locks=locks),
                            spread=2 ** lost, pick=pick)
    free = sorted((used, a) for i, (a, used) in enumerate(ordered) if i not in locked)
    if not free:
        assert isinstance(decision, NoFreeKey)
        return
    assert isinstance(decision, Acquire)
    assert (decision.key.last_used, decision.key.address) in free[:2 ** lost]
    if lost == 0:
        assert (decision.key.last_used, decision.key.address) == free[0]
