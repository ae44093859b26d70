"""A process's memory of its own writes keeps the newest entries only."""

from __future__ import annotations

from panthera.kernel.recent import Recent


def test_past_its_size_the_entry_put_longest_ago_goes_first() -> None:
    recent: Recent[str, int] = Recent(most=2)
    recent.put("a", 1)
    recent.put("b", 2)
    recent.put("a", 3)  # put again: now the newest
    recent.put("c", 4)
    assert (recent.get("a"), recent.get("b"), recent.get("c")) == (3, None, 4)
    assert len(recent) == 2


def test_pop_forgets_and_answers_none_for_what_it_does_not_hold() -> None:
    recent: Recent[str, int] = Recent()
    recent.put("a", 1)
    assert recent.pop("a") == 1
    assert recent.pop("a") is None
    assert recent.get("a") is None
