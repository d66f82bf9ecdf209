"""How ``gigapulse bench recovery`` reads a freshness curve: the outage's end, not the sawtooth after it."""

from __future__ import annotations

import math

import pytest

from gigapulse.bench.recovery import recovered_after, steady


def _curve(ages: list[float], start: float = 100.0, step: float = 0.5) -> list[tuple[float, float]]:
    return [(start + i * step, a) for i, a in enumerate(ages)]


@pytest.mark.parametrize(("ages", "expected"), [
    # steady sawtooth, a 5 s outage, then the sawtooth again (peaking above 2 s now and then)
    ([1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 1.2, 1.8, 2.3, 1.1, 2.4, 1.0], 3.0),
    # caught up in steps: partitions come back one by one, the slowest decides
    ([1.0, 3.0, 5.0, 6.0, 3.5, 4.0, 2.5, 1.5, 1.0], 3.5),
    # the kill went unnoticed by readers
    ([1.0, 1.5, 1.9, 1.2], 0.0),
    # never back under 2 s: not recovered
    ([1.0, 3.0, 5.0, 7.0, 9.0], math.nan),
])
def test_recovery_is_the_first_fresh_poll_after_the_outage_peak(ages, expected):
    got = recovered_after(_curve(ages), kill_at=100.0)
    assert got == pytest.approx(expected, nan_ok=True)


def test_polls_before_the_kill_do_not_count():
    samples = _curve([9.0, 9.0, 1.0, 1.5, 3.0, 1.0], start=99.0)  # stale before the kill at 100
    assert recovered_after(samples, kill_at=100.0) == pytest.approx(1.5)


def test_steady_is_the_median_of_the_last_seconds():
    saw = _curve([1.0, 1.5, 2.2, 1.0, 1.6, 2.4, 1.1, 1.7, 2.3, 1.2])
    assert steady(saw, now=105.0)
    behind = _curve([1.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5])
    assert not steady(behind, now=105.0)
    assert not steady(saw[:3], now=101.5)  # too few polls to say
