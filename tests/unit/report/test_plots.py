"""bench.report.plots: the data behind the pictures, and that every picture is written as a real PNG.

What the pictures look like was checked by eye (see the README); these tests keep them coming.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from runfactory import T0, encoded, make_run, sample, spread  # noqa: E402

from bench.report import plots  # noqa: E402
from bench.wire import hist  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def test_seconds_of_scales_or_drops_the_partial_last_second():
    part = {"seconds": 2.5, "timeseries": [{"t": 0, "ops": 10}, {"t": 1, "ops": 10}, {"t": 2, "ops": 4}]}
    assert [(a, b) for a, b, _ in plots.seconds_of(part)] == [(0, 1), (1, 2), (2, 2.5)]
    part["seconds"] = 2.1  # 0.1 s of stragglers: not a rate
    assert [(a, b) for a, b, _ in plots.seconds_of(part)] == [(0, 1), (1, 2)]


def test_spectrum_points_climb_from_the_min_to_the_max():
    values = spread(100, 10_000, step=50)
    xs, ys = plots.spectrum_points(encoded(values))
    assert xs[0] == 1 and xs[-1] == pytest.approx(10_000)
    assert ys == sorted(ys)
    h = hist.decode(encoded(values))
    assert ys[0] == pytest.approx(h.get_value_at_percentile(0) / 1000)
    assert ys[-1] == pytest.approx(h.get_max_value() / 1000, rel=1e-3)
    assert plots.spectrum_points(encoded([])) == ([], [])


@pytest.mark.parametrize("x, label", [(1, "0%"), (10, "90%"), (100, "99%"), (1000, "99.9%"), (1e5, "99.999%")])
def test_percentile_axis_labels(x, label):
    assert plots._percentile_label(x) == label


def test_run_start_and_placement_on_one_clock():
    run = make_run("r", [("set", spread(100, 20)), ("get", spread(50, 20))], repeat=2)
    assert plots.run_start(run) == T0
    placed = [(name, part["name"], offset) for name, part, offset in plots._placed(run)]
    assert placed == [("set", "set#1", 0.0), ("set", "set#2", 3.0), ("get", "get#1", 6.0), ("get", "get#2", 9.0)]


def test_write_all_writes_every_picture(tmp_path: Path):
    run = make_run("r1", [("set", spread(100, 200)), ("get", spread(50, 200))], repeat=2)
    run["hosts"] = {"h1": {"roles": ["server"]}, "h2": {"roles": ["agent"]}}
    proc = {"7": {"cpu_pct": 30.0, "rss_bytes": 1, "name": "redis-server"}}
    metrics = {"h1": [sample(T0 + i, idle=40, procs=proc) for i in range(13)],
               "h2": [sample(T0 + i, idle=5) for i in range(13)]}
    other = make_run("r2", [("set", spread(150, 200))])
    paths = plots.write_all(run, metrics, tmp_path / "plots", others=[other], file_stem=lambda n: f"x-{n}")
    names = [p.name for p in paths]
    assert names == ["throughput.png", "latency.png", "hosts.png", "spectrum-x-set.png", "spectrum-x-get.png"]
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000, path


def test_no_host_picture_without_metrics(tmp_path: Path):
    paths = plots.write_all(make_run("r1", [("set", spread(100, 50))]), {}, tmp_path)
    assert [p.name for p in paths] == ["throughput.png", "latency.png", "spectrum-set.png"]
