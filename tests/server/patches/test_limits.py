"""The protocol-ping budget both servers' patches give a socket (server/patches/limits.py)."""

from __future__ import annotations

from server.patches import limits


def test_a_burst_of_pings_is_allowed_and_the_next_one_is_refused(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(limits.time, "monotonic", lambda: now[0])
    budget = limits.PingBudget(rate=20.0, burst=60)
    assert [budget.take() for _ in range(60)] == [True] * 60
    assert budget.take() is False


def test_the_budget_refills_at_its_rate_up_to_the_burst(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(limits.time, "monotonic", lambda: now[0])
    budget = limits.PingBudget(rate=20.0, burst=60)
    for _ in range(60):
        budget.take()
    now[0] += 0.5  # ten tokens back
    assert [budget.take() for _ in range(11)] == [True] * 10 + [False]
    now[0] += 3600
    assert sum(budget.take() for _ in range(100)) == 60


def test_a_rate_or_burst_of_zero_is_no_limit():
    assert all(limits.PingBudget(rate=0, burst=60).take() for _ in range(1000))
    assert all(limits.PingBudget(rate=20.0, burst=0).take() for _ in range(1000))


def test_the_pings_of_one_read_take_their_tokens_together_or_not_at_all(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(limits.time, "monotonic", lambda: now[0])
    budget = limits.PingBudget(rate=20.0, burst=60)
    assert budget.take(50) is True
    assert budget.take(11) is False  # ten left: none taken
    assert budget.take(10) is True
