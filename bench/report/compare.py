"""Comparing runs: is B faster or slower than A, and is the difference beyond the noise?

In the manner of benchstat: each side is a set of *samples* of a metric, one per measured
repetition of a benchmark (a benchmark with ``repeat = N`` gives N samples per run, and a side
may hold several runs of one spawn file, whose samples are pooled). For every benchmark and
metric the table shows each side's median with its spread, and the change of the medians in
percent, or ``~`` when the change is not beyond the noise.

The test: a two-sided Mann-Whitney U test (Wilcoxon rank-sum) on the two sides' samples,
significant when p < ALPHA = 0.05. Why this one: it is what benchstat uses; it assumes nothing
about the shape of the distribution (throughput samples are often skewed by a slow outlier),
only that the samples are independent, and it is exact for the small sample counts benchmarks
have. p is computed exactly from the permutation distribution of the rank sum (ties get mid
ranks and are handled exactly too) up to EXACT_MAX_SAMPLES samples in all, and from the normal
approximation with tie and continuity correction above that.

A consequence worth knowing: with few samples even a huge change cannot reach p < 0.05. The
smallest possible two-sided p for n+n samples is 2/C(2n, n): 0.33 for 2+2, 0.10 for 3+3, 0.029
for 4+4, 0.008 for 5+5. So at least 4 repetitions per side are needed to call anything; with
fewer the table shows the change followed by ``?`` (no verdict possible), never ``~``.

Metrics: throughput (ops/s, higher is better) and latency p50 and p99 (lower is better), read
per repetition from the merged entries of run.json (``bench.report.merge``).
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tabulate import tabulate

from bench.report.document import RunDoc

ALPHA = 0.05
EXACT_MAX_SAMPLES = 60  # exact permutation p-values up to this many samples in all

# (key, table title, higher is better)
METRICS: tuple[tuple[str, str, bool], ...] = (
    ("ops/s", "throughput (ops/s)", True),
    ("p50", "latency p50 (ms)", False),
    ("p99", "latency p99 (ms)", False),
)
FORMATS = ("simple", "github", "csv", "json")


class CompareError(ValueError):
    pass


@dataclass(frozen=True)
class Comparison:
    """One benchmark's one metric, A against B. Latencies are in microseconds here."""

    benchmark: str
    metric: str  # "ops/s" | "p50" | "p99"
    base: tuple[float, ...]
    new: tuple[float, ...]
    base_median: float | None
    new_median: float | None
    change_pct: float | None  # (new - base) / base, in percent
    p_value: float | None  # None when either side has fewer than 2 samples
    verdict: str  # "better" | "worse" | "same" (~) | "unknown" (too few samples) | "missing"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["base"], d["new"] = list(self.base), list(self.new)
        return d


# ---------------------------------------------------------------------------------------------
# The statistics


def mann_whitney_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of the Mann-Whitney U test of samples ``a`` and ``b`` (each >= 1)."""
    if not a or not b:
        raise CompareError("the Mann-Whitney test needs at least one sample on each side")
    ranks = _mid_ranks([*a, *b])
    n1, n2 = len(a), len(b)
    r1 = sum(ranks[:n1])
    if len(set(ranks)) == 1:  # every sample equal: nothing to tell apart
        return 1.0
    if n1 + n2 <= EXACT_MAX_SAMPLES:
        return _exact_p(ranks, n1, r1)
    return _normal_p(ranks, n1, n2, r1)


def min_p(n1: int, n2: int) -> float:
    """The smallest two-sided p any n1+n2 samples without ties can give."""
    return min(1.0, 2 / math.comb(n1 + n2, n1))


def _mid_ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1  # tied values share the mean of their ranks
        i = j + 1
    return ranks


def _exact_p(ranks: Sequence[float], n1: int, r1: float) -> float:
    """P(|R - E[R]| >= |r1 - E[R]|) over every way of choosing n1 of the ranks (equally likely).

    Counted by dynamic programming over doubled ranks (integers, since mid ranks are halves):
    ways[k][s] = number of k-subsets of the ranks seen so far whose doubled sum is s.
    """
    doubled = [int(round(2 * r)) for r in ranks]
    total = sum(doubled)
    ways = [[0] * (total + 1) for _ in range(n1 + 1)]
    ways[0][0] = 1
    for value in doubled:
        for k in range(n1, 0, -1):
            row, below = ways[k], ways[k - 1]
            for s in range(total, value - 1, -1):
                if below[s - value]:
                    row[s] += below[s - value]
    mean2 = n1 * total / len(doubled)  # E[2R]
    observed = abs(2 * r1 - mean2)
    extreme = sum(count for s, count in enumerate(ways[n1]) if count and abs(s - mean2) >= observed - 1e-9)
    return min(1.0, extreme / math.comb(len(doubled), n1))


def _normal_p(ranks: Sequence[float], n1: int, n2: int, r1: float) -> float:
    n = n1 + n2
    u = r1 - n1 * (n1 + 1) / 2
    mean = n1 * n2 / 2
    counts: dict[float, int] = {}
    for r in ranks:
        counts[r] = counts.get(r, 0) + 1
    ties = sum(t ** 3 - t for t in counts.values())
    variance = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
    if variance <= 0:
        return 1.0
    z = max(0.0, abs(u - mean) - 0.5) / math.sqrt(variance)
    return min(1.0, math.erfc(z / math.sqrt(2)))


# ---------------------------------------------------------------------------------------------
# Samples from runs


def samples(runs: Sequence[RunDoc]) -> dict[str, dict[str, list[float]]]:
    """``{benchmark: {metric: [one value per repetition, over every run]}}``, in run order."""
    out: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        for entry in run.get("benchmarks", ()):
            per = out.setdefault(str(entry["name"]), {key: [] for key, _, _ in METRICS})
            for part in entry.get("repeats") or (entry,):
                if not part.get("agents_ok"):
                    continue  # a repetition with no result says nothing about speed
                latency = part.get("latency_us") or {}
                per["ops/s"].append(float(part.get("ops_per_s") or 0.0))
                if latency.get("count"):
                    per["p50"].append(float(latency["p50"]))
                    per["p99"].append(float(latency["p99"]))
    return out


def compare(base_runs: Sequence[RunDoc], new_runs: Sequence[RunDoc],
            alpha: float = ALPHA) -> list[Comparison]:
    """Every benchmark of either side (A's order, then B's new ones), every metric."""
    if not base_runs or not new_runs:
        raise CompareError("compare needs at least one run on each side")
    a, b = samples(base_runs), samples(new_runs)
    names = list(dict.fromkeys([*a, *b]))
    out = []
    for name in names:
        for key, _, higher_better in METRICS:
            out.append(_compare_one(name, key, a.get(name, {}).get(key, []), b.get(name, {}).get(key, []),
                                    higher_better, alpha))
    return out


def _compare_one(name: str, metric: str, base: Sequence[float], new: Sequence[float], higher_better: bool,
                 alpha: float) -> Comparison:
    base_median = statistics.median(base) if base else None
    new_median = statistics.median(new) if new else None
    if base_median is None or new_median is None:
        return Comparison(name, metric, tuple(base), tuple(new), base_median, new_median, None, None, "missing")
    change = (new_median - base_median) / base_median * 100 if base_median else None
    if len(base) < 2 or len(new) < 2:
        return Comparison(name, metric, tuple(base), tuple(new), base_median, new_median, change, None, "unknown")
    p = mann_whitney_p(base, new)
    if p >= alpha:
        verdict = "unknown" if min_p(len(base), len(new)) >= alpha else "same"
    else:
        verdict = "better" if (new_median > base_median) == higher_better else "worse"
    return Comparison(name, metric, tuple(base), tuple(new), base_median, new_median, change, round(p, 4), verdict)


# ---------------------------------------------------------------------------------------------
# Tables


def spread_pct(values: Sequence[float]) -> float | None:
    """Half the range, in percent of the median: the ``± x%`` shown beside a median."""
    if len(values) < 2:
        return None
    median = statistics.median(values)
    return (max(values) - min(values)) / 2 / median * 100 if median else None


def render(comparisons: Sequence[Comparison], fmt: str = "simple", labels: tuple[str, str] = ("A", "B")) -> str:
    """One table per metric (benchstat's layout), columns A and B, after a line saying which runs
    ``labels`` A and B are; csv/json: one flat row per benchmark and metric."""
    if fmt not in FORMATS:
        raise CompareError(f"unknown table format {fmt!r}; one of {', '.join(FORMATS)}")
    if fmt == "json":
        return json.dumps({"base": labels[0], "new": labels[1], "alpha": ALPHA,
                           "comparisons": [c.to_dict() for c in comparisons]}, indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["benchmark", "metric", "base_median", "base_n", "new_median", "new_n", "change_pct",
                         "p_value", "verdict"])
        for c in comparisons:
            writer.writerow([c.benchmark, c.metric, _num(c.base_median), len(c.base), _num(c.new_median),
                             len(c.new), _num(c.change_pct), _num(c.p_value), c.verdict])
        return out.getvalue().rstrip("\n")
    blocks = []
    for key, title, _ in METRICS:
        rows = [[c.benchmark, _cell(c.base, c.base_median, key), _cell(c.new, c.new_median, key), _change(c)]
                for c in comparisons if c.metric == key]
        blocks.append(tabulate(rows, headers=[title, "A", "B", "B vs A"], tablefmt=fmt,
                               disable_numparse=True, colalign=("left", "right", "right", "left")))
    notes = _notes(comparisons)
    text = f"A: {labels[0]}\nB: {labels[1]}\n\n" + "\n\n".join(blocks)
    return text + ("\n\n" + "\n".join(notes) if notes else "")


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def _cell(values: Sequence[float], median: float | None, metric: str) -> str:
    if median is None:
        return "-"
    text = f"{median:,.1f}" if metric == "ops/s" else f"{median / 1000:.3f}"
    spread = spread_pct(values)
    return text + (f" ± {spread:.0f}%" if spread is not None else "")


def _change(c: Comparison) -> str:
    n = f"n={len(c.base)}+{len(c.new)}"
    if c.verdict == "missing":
        return "-"
    if c.change_pct is None:
        return f"? ({n})"
    change = f"{c.change_pct:+.2f}%"
    if c.verdict == "same":
        return f"~ (p={c.p_value:.3f} {n})"
    if c.verdict == "unknown":
        return f"{change} ? ({n})" if c.p_value is None else f"{change} ? (p={c.p_value:.3f} {n})"
    return f"{change} (p={c.p_value:.3f} {n})"


def _notes(comparisons: Sequence[Comparison]) -> list[str]:
    notes = [f"~: no change beyond the noise (two-sided Mann-Whitney U test, p >= {ALPHA}); "
             "± is half the range of the samples, in % of their median"]
    if any(c.verdict == "unknown" for c in comparisons):
        notes.append("?: too few samples to tell a change from noise; give the benchmark `repeat = 5` "
                     "(4 or more per side can reach p < 0.05), or compare several runs per side (A1,A2,..)")
    return notes
