"""A clock offset that is not a finite number (one host's state said NaN or Infinity) is ignored
and said by `inv collect`, never a crash of the whole run's merge (issue 20, item 1)."""

from __future__ import annotations

import math

import pytest

from bench.report import seconds
from fabfile.stages import collect


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_clock_offset_that_is_not_a_finite_number_is_ignored_and_said(bad):
    said: list[str] = []
    offsets = collect._clock_offsets({"clock_offsets": {"tb3": bad, "tb4": -0.5, "tb5": "x"}}, said.append)
    assert offsets == {"tb4": -0.5}
    assert said == [f"warning: tb3: its clock offset {bad!r} is not a finite number: ignored",
                    "warning: tb5: its clock offset 'x' is not a finite number: ignored"]
    assert seconds.aligned(1_700_000_000, bad) == 1_700_000_000  # round(at - nan) crashed the merge
    merged = seconds.merge("b", [{"agent_num": 0, "started_at": 1.0, "timeseries": [{"at": 5, "ops": 1}]}], {0: bad})
    assert [p["at"] for p in merged] == [5]
