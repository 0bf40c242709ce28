"""Bounded parallelism: every item runs, every failure is reported."""

from __future__ import annotations

import pytest

from fabfile.remote import pool


def test_pool_runs_every_item_and_reports_every_failure():
    seen = []

    def work(x):
        seen.append(x)
        if x % 2:
            raise ValueError(f"odd {x}")
        return x * 10

    with pytest.raises(pool.PartialFailure) as err:
        pool.each(range(6), work, workers=3)
    assert sorted(seen) == list(range(6))
    assert err.value.results == {0: 0, 2: 20, 4: 40}
    assert sorted(err.value.failures) == [1, 3, 5]
