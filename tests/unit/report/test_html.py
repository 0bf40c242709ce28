"""bench.report.html: one self-contained page, every benchmark's row, card and picture marked."""

from __future__ import annotations

import re

from runfactory import make_run, spread

from bench.report import expect, html
from bench.spawn import expectations

PNG = b"\x89PNG\r\n\x1a\nnot really"


def test_every_benchmark_has_its_row_card_and_spectrum_and_expectations_show():
    run = make_run("r1", [("set <&>", spread(100, 60)), ("get", spread(50, 60))])
    expect.apply(run, {"get": expectations.parse_all(["p99 < 1s", "ops/s > 1000000000"])})
    pictures = {"throughput.png": PNG, "latency.png": PNG, "spectrum-set.png": PNG, "spectrum-get.png": PNG}
    page = html.page(run, pictures, notes=["set: agent 1 on h5: lost"], file_stem=lambda n: n.split()[0])
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    for name in ('set &lt;&amp;&gt;', "get"):
        assert len(re.findall(rf'<tr data-benchmark="{re.escape(name)}">', page)) >= 1
        assert f'<section class="benchmark" data-benchmark="{name}">' in page
        assert re.search(rf'<img alt="[^"]*" data-benchmark="{re.escape(name)}" src="data:image/png;base64,', page)
    assert page.count('src="data:image/png;base64,') == 4
    assert "onerror=\"console.error(" in page  # a broken picture shows on the console
    assert "1 of 2 expectation(s) failed" in page and 'class="fail">FAILED' in page and 'class="pass">ok' in page
    assert "<h2>Failures and warnings</h2>" in page and "lost" in page
    assert "http" not in page.split("<body>")[1]  # self-contained: nothing fetched


def test_a_benchmark_without_latency_says_so_instead_of_a_picture():
    run = make_run("r1", [("dead", spread(100, 2))])
    run["benchmarks"][0]["latency_us"] = {"count": 0}
    page = html.page(run, {})
    assert "no latency was recorded, so no spectrum" in page and "<img" not in page
