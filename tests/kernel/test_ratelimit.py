"""Unit tests of the in-memory rate limiter and attempt counter, on a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from panthera.kernel.ratelimit import (
    Decision,
    MemoryAttemptCounter,
    MemoryRateLimiter,
    RedisAttemptCounter,
    RedisRateLimiter,
    build_attempt_counter,
    build_rate_limiter,
)

T = TypeVar("T")


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def run_now(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that must finish without ever suspending.

    The memory adapters rely on never suspending for their safety without a lock, so
    driving them this way both checks that and keeps Hypothesis examples fast.
    """
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    coro.close()
    raise AssertionError("the coroutine suspended")


def hit(limiter: MemoryRateLimiter, key: str, *, rate: int, burst: int, cost: int = 1) -> Decision:
    return run_now(limiter.hit(key, rate_per_minute=rate, burst=burst, cost=cost))


def check_decision(decision: Decision, burst: int) -> None:
    assert 0 <= decision.remaining <= burst
    assert decision.reset_after_seconds >= 0
    if decision.allowed:
        assert decision.retry_after_seconds == 0
    else:
        assert decision.retry_after_seconds > 0


rates = st.integers(min_value=1, max_value=6000)
bursts = st.integers(min_value=1, max_value=20)
# Gaps between hits in units of the emission interval: mostly short (so the limiter
# is under pressure), sometimes exactly zero, sometimes long enough to refill.
gaps = st.one_of(st.just(0.0), st.floats(min_value=0, max_value=1.5), st.floats(0, 30))


@st.composite
def schedules(draw: st.DrawFn) -> tuple[int, int, list[tuple[float, int]]]:
    """(rate, burst, [(gap in intervals, cost), ...])."""
    rate = draw(rates)
    burst = draw(bursts)
    costs = st.integers(min_value=1, max_value=burst)
    steps = draw(st.lists(st.tuples(gaps, costs), max_size=80))
    return rate, burst, steps


def play(
    limiter: MemoryRateLimiter,
    clock: FakeClock,
    rate: int,
    burst: int,
    steps: list[tuple[float, int]],
    key: str = "k",
) -> list[tuple[float, int, Decision]]:
    interval = 60 / rate
    played = []
    for gap, cost in steps:
        clock.advance(gap * interval)
        decision = hit(limiter, key, rate=rate, burst=burst, cost=cost)
        check_decision(decision, burst)
        played.append((clock.now, cost, decision))
    return played


# -- GCRA properties ------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(schedules())
def test_admitted_within_any_window_never_exceeds_burst_plus_rate(
    schedule: tuple[int, int, list[tuple[float, int]]],
) -> None:
    rate, burst, steps = schedule
    clock = FakeClock()
    played = play(MemoryRateLimiter(clock=clock), clock, rate, burst, steps)
    admitted = [(at, cost) for at, cost, decision in played if decision.allowed]
    # Any window of length W holds admitted hits first..last with last - first <= W,
    # so checking every such span covers every window. GCRA's exact bound is
    # burst + span * rate / 60; the slack is the limiter's microsecond tolerance.
    for i, (first, _) in enumerate(admitted):
        total = 0
        for last, cost in admitted[i:]:
            total += cost
            assert total <= burst + (last - first + 1e-6) * rate / 60 + 1e-6


@settings(max_examples=300, deadline=None)
@given(schedules(), st.data())
def test_waiting_retry_after_is_enough_and_not_much_more_than_needed(
    schedule: tuple[int, int, list[tuple[float, int]]], data: st.DataObject
) -> None:
    rate, burst, steps = schedule
    cost = data.draw(st.integers(min_value=1, max_value=burst), label="cost")
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock)
    play(limiter, clock, rate, burst, steps)
    # Exhaust the key at this instant, so the last decision is a refusal.
    for _ in range(burst + 1):
        decision = hit(limiter, "k", rate=rate, burst=burst, cost=cost)
        if not decision.allowed:
            break
    assert not decision.allowed
    assert decision.retry_after_seconds <= cost * 60 / rate + 1e-6
    if decision.retry_after_seconds > 2e-3:
        clock.advance(decision.retry_after_seconds - 1e-3)
        assert not hit(limiter, "k", rate=rate, burst=burst, cost=cost).allowed
        clock.advance(1e-3)
    else:
        clock.advance(decision.retry_after_seconds)
    assert hit(limiter, "k", rate=rate, burst=burst, cost=cost).allowed


@settings(max_examples=200, deadline=None)
@given(schedules())
def test_remaining_is_exactly_the_number_of_further_unit_hits_admitted_now(
    schedule: tuple[int, int, list[tuple[float, int]]],
) -> None:
    rate, burst, steps = schedule
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock)
    played = play(limiter, clock, rate, burst, steps)
    remaining = played[-1][2].remaining if played else burst
    for _ in range(remaining):
        assert hit(limiter, "k", rate=rate, burst=burst).allowed
    assert not hit(limiter, "k", rate=rate, burst=burst).allowed


@settings(max_examples=200, deadline=None)
@given(schedules())
def test_after_reset_after_the_full_burst_is_available(
    schedule: tuple[int, int, list[tuple[float, int]]],
) -> None:
    rate, burst, steps = schedule
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock)
    played = play(limiter, clock, rate, burst, steps)
    if played:
        clock.advance(played[-1][2].reset_after_seconds)
    decision = hit(limiter, "k", rate=rate, burst=burst, cost=burst)
    assert decision.allowed
    assert decision.remaining == 0


@settings(max_examples=100, deadline=None)
@given(
    rates,
    bursts,
    st.lists(st.tuples(gaps, st.sampled_from("abcde")), max_size=100),
)
def test_keys_do_not_affect_each_other(
    rate: int, burst: int, steps: list[tuple[float, str]]
) -> None:
    clock = FakeClock()
    shared = MemoryRateLimiter(clock=clock, max_keys=5)
    alone = {key: MemoryRateLimiter(clock=clock) for key in "abcde"}
    for gap, key in steps:
        clock.advance(gap * 60 / rate)
        together = hit(shared, key, rate=rate, burst=burst)
        assert together == hit(alone[key], key, rate=rate, burst=burst)


def test_fresh_key_admits_exactly_burst_then_one_per_interval() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock)
    decisions = [hit(limiter, "k", rate=60, burst=3) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert decisions[2].reset_after_seconds == pytest.approx(3.0)
    assert decisions[3].retry_after_seconds == pytest.approx(1.0)
    for _ in range(10):
        clock.advance(1.0)
        assert hit(limiter, "k", rate=60, burst=3).allowed
        assert not hit(limiter, "k", rate=60, burst=3).allowed


def test_refused_hits_spend_nothing() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock)
    hit(limiter, "k", rate=60, burst=1)
    for _ in range(100):
        assert not hit(limiter, "k", rate=60, burst=1).allowed
    clock.advance(1.0)
    assert hit(limiter, "k", rate=60, burst=1).allowed


def test_cost_zero_reports_without_spending_or_storing() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock)
    peek = hit(limiter, "k", rate=60, burst=4, cost=0)
    assert peek == Decision(True, 4, 0.0, 0.0)
    assert len(limiter) == 0
    hit(limiter, "k", rate=60, burst=4, cost=4)
    peek = hit(limiter, "k", rate=60, burst=4, cost=0)
    assert peek.allowed
    assert peek.remaining == 0
    assert not hit(limiter, "k", rate=60, burst=4).allowed


@pytest.mark.parametrize(
    ("rate", "burst", "cost"), [(0, 1, 1), (60, 0, 1), (60, 3, 4), (60, 3, -1)]
)
def test_invalid_parameters_are_refused(rate: int, burst: int, cost: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        hit(MemoryRateLimiter(), "k", rate=rate, burst=burst, cost=cost)


async def test_concurrent_hits_on_the_event_loop_admit_exactly_burst() -> None:
    limiter = MemoryRateLimiter()
    decisions = await asyncio.gather(
        *(limiter.hit("k", rate_per_minute=1, burst=17) for _ in range(200))
    )
    assert sum(d.allowed for d in decisions) == 17


# -- Memory bounds --------------------------------------------------------------------


def test_keys_are_dropped_once_their_tat_has_passed() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock)
    for n in range(10_000):
        hit(limiter, f"client-{n}", rate=60, burst=5, cost=n % 5 + 1)
    assert len(limiter) == 10_000
    clock.advance(5.0)
    hit(limiter, "late", rate=60, burst=5)
    assert len(limiter) == 1
    assert len(limiter._heap) == 1


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(gaps, st.integers(0, 50), st.integers(1, 5)), max_size=200))
def test_memory_stays_bounded_by_max_keys(steps: list[tuple[float, int, int]]) -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock, max_keys=8)
    for gap, key, cost in steps:
        clock.advance(gap)
        hit(limiter, str(key), rate=60, burst=5, cost=cost)
        assert len(limiter) <= 8
        assert len(limiter._heap) <= 2 * 8 + 1025


def test_one_hot_key_does_not_grow_the_heap() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock)
    for _ in range(50_000):
        clock.advance(0.001)
        hit(limiter, "hot", rate=60_000, burst=10)
    assert len(limiter) == 1
    assert len(limiter._heap) <= 2 + 1024


def test_at_capacity_the_key_nearest_expiry_goes_first() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock, max_keys=10)
    for _ in range(3):
        hit(limiter, "abuser", rate=1, burst=3)
    # A spray of fresh keys must not push the throttled key out and forgive it.
    for n in range(1_000):
        hit(limiter, f"spray-{n}", rate=1, burst=3)
    assert len(limiter) == 10
    assert not hit(limiter, "abuser", rate=1, burst=3).allowed


# -- Attempt counter ------------------------------------------------------------------


def add(counter: MemoryAttemptCounter, key: str, window: int) -> int:
    return run_now(counter.add(key, window_seconds=window))


def count(counter: MemoryAttemptCounter, key: str, window: int) -> int:
    return run_now(counter.count(key, window_seconds=window))


def test_counter_counts_and_resets() -> None:
    counter = MemoryAttemptCounter(clock=FakeClock())
    assert [add(counter, "alice", 60) for _ in range(3)] == [1, 2, 3]
    assert count(counter, "alice", 60) == 3
    assert count(counter, "bob", 60) == 0
    run_now(counter.reset("alice"))
    assert count(counter, "alice", 60) == 0
    assert len(counter) == 0
    run_now(counter.reset("never-seen"))


def test_counter_window_slides() -> None:
    clock = FakeClock()
    counter = MemoryAttemptCounter(clock=clock)
    add(counter, "alice", 60)
    clock.advance(30)
    assert add(counter, "alice", 60) == 2
    clock.advance(29.5)
    assert count(counter, "alice", 60) == 2
    clock.advance(0.5)  # the first attempt is now exactly a window old: out
    assert count(counter, "alice", 60) == 1
    assert add(counter, "alice", 60) == 2
    clock.advance(60)
    assert count(counter, "alice", 60) == 0
    assert len(counter) == 0


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=1, max_value=120),
    st.lists(
        st.tuples(st.floats(0, 100), st.sampled_from(["add", "count", "reset"])), max_size=100
    ),
)
def test_counter_matches_an_exact_sliding_window(
    window: int, steps: list[tuple[float, str]]
) -> None:
    clock = FakeClock()
    counter = MemoryAttemptCounter(clock=clock)
    log: list[float] = []
    for gap, op in steps:
        clock.advance(gap)
        if op == "reset":
            run_now(counter.reset("k"))
            log.clear()
            continue
        if op == "add":
            log.append(clock.now)
            got = add(counter, "k", window)
        else:
            got = count(counter, "k", window)
        assert got == sum(1 for at in log if at > clock.now - window)


def test_counter_saturates_at_max_entries_per_key() -> None:
    counter = MemoryAttemptCounter(clock=FakeClock(), max_entries_per_key=5)
    assert [add(counter, "k", 60) for _ in range(8)] == [1, 2, 3, 4, 5, 5, 5, 5]


def test_counter_keeps_at_most_max_keys_dropping_the_least_recent() -> None:
    clock = FakeClock()
    counter = MemoryAttemptCounter(clock=clock, max_keys=3)
    for key in ["a", "b", "c"]:
        add(counter, key, 60)
    add(counter, "a", 60)
    add(counter, "d", 60)
    assert len(counter) == 3
    assert count(counter, "b", 60) == 0
    assert count(counter, "a", 60) == 2
    for n in range(1_000):
        add(counter, f"spray-{n}", 60)
        assert len(counter) <= 3


def test_counter_refuses_an_empty_window() -> None:
    with pytest.raises(ValueError, match="window_seconds"):
        add(MemoryAttemptCounter(), "k", 0)


# -- Factories ------------------------------------------------------------------------


async def test_factories_pick_memory_without_a_url_and_redis_with_one() -> None:
    assert isinstance(build_rate_limiter(""), MemoryRateLimiter)
    assert isinstance(build_attempt_counter(""), MemoryAttemptCounter)
    # Building a Redis client does not connect, so no server is needed here.
    limiter = build_rate_limiter("redis://127.0.0.1:6379/15")
    counter = build_attempt_counter("redis://127.0.0.1:6379/15")
    assert isinstance(limiter, RedisRateLimiter)
    assert isinstance(counter, RedisAttemptCounter)
    await limiter.close()
    await counter.close()
