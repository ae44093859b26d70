"""The rules of an order's life, as pure functions."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from panthera.orders.states import (
    ALLOWED_MOVES,
    CANCELLABLE,
    FINAL,
    REFUNDABLE,
    CancelReason,
    OrderStatus,
    can_move,
    reason_for_payment_failure,
    reason_for_rejected_stock,
    retry_delay_seconds,
)

statuses = st.sampled_from(list(OrderStatus))


def test_every_status_has_its_rules_and_final_ones_go_nowhere() -> None:
    assert set(ALLOWED_MOVES) == set(OrderStatus)
    for status in FINAL:
        assert not ALLOWED_MOVES[status]
    for status in set(OrderStatus) - FINAL:
        assert ALLOWED_MOVES[status], status


def test_every_status_is_reachable_from_pending() -> None:
    seen, frontier = {OrderStatus.PENDING}, [OrderStatus.PENDING]
    while frontier:
        for target in ALLOWED_MOVES[frontier.pop()]:
            if target not in seen:
                seen.add(target)
                frontier.append(target)
    assert seen == set(OrderStatus)


def test_cancel_and_refund_sets_agree_with_the_moves() -> None:
    for status in OrderStatus:
        assert (status in CANCELLABLE) == can_move(status, OrderStatus.CANCELLED)
        assert (status in REFUNDABLE) == can_move(status, OrderStatus.REFUNDED)
    # Nothing shipped can be cancelled: it would put sold goods back on the shelf.
    assert OrderStatus.SHIPPED not in CANCELLABLE


@given(st.lists(statuses, max_size=12))
def test_any_walk_by_the_rules_never_leaves_a_final_status(walk: list[OrderStatus]) -> None:
    current = OrderStatus.PENDING
    for target in walk:
        if can_move(current, target):
            assert current not in FINAL
            current = target
    assert current in set(OrderStatus)


@given(st.one_of(st.none(), st.text(max_size=30)))
def test_payment_failures_map_to_a_known_reason(code: str | None) -> None:
    assert reason_for_payment_failure(code) in set(CancelReason)
    assert reason_for_rejected_stock(code) in {
        CancelReason.OUT_OF_STOCK,
        CancelReason.UNKNOWN_PRODUCT,
    }


def test_known_payment_failures() -> None:
    assert reason_for_payment_failure("card_declined") == CancelReason.CARD_DECLINED
    assert reason_for_payment_failure("insufficient_funds") == CancelReason.INSUFFICIENT_FUNDS
    assert reason_for_payment_failure("processing_error") == CancelReason.PAYMENT_ERROR


@given(st.integers(min_value=1, max_value=10_000))
def test_backoff_grows_and_is_capped(attempt: int) -> None:
    delay = retry_delay_seconds(attempt)
    assert 0 < delay <= 60
    assert retry_delay_seconds(attempt + 1) >= delay
