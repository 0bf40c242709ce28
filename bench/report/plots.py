"""Pictures of a run, as PNG files: what happened over time, and each benchmark's latency spectrum.

Needs matplotlib (the ``plot`` extra: ``pip install -e '.[plot]'``); only ``inv plot`` and
``inv report --html`` import this module, and it draws on matplotlib's object API with the Agg
canvas (no pyplot, no display, no global state).

:func:`write_all` writes into a directory:

* ``throughput.png`` -- ops/s in each second of every benchmark, on the run's clock;
* ``latency.png`` -- p50 (dashed) and p99 (solid) in each second, log scale;
* ``hosts.png`` -- each host's cpu (busy % of all cores), its server processes' cpu (% of one
  core) and its network traffic, per second, with the benchmarks' time spans shaded;
* ``spectrum-<benchmark>.png`` -- the latency percentile spectrum of each benchmark, from its
  merged histogram (the classic HdrHistogram plot: percentile on a 1/(1-p) axis), one line per
  run when runs are compared, dashed for service time in open-loop runs;
* ``capacity-<benchmark>.png`` -- a capacity search's p99 (and p50) against the rate of each step
  (bench.report.search), passing steps apart from failing ones, its latency SLOs as lines and the
  found rate marked.

Time is seconds since the run's first measured phase began (agents' and samplers' own clocks,
epoch seconds: hosts should run NTP). Each second of a benchmark is drawn as a flat step over
that second; the last, partial second is drawn over its real length (its ops/s scaled to it), or
left out when shorter than MIN_PARTIAL_S (a few stragglers' ops say nothing about a rate).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from bench.report import hosts as host_metrics
from bench.report.document import BenchmarkEntry, MergedSecond, RunDoc
from bench.wire import hist
from bench.wire.labels import split_label

SIZE = (11, 5.5)
DPI = 100
COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray",
          "tab:olive", "tab:cyan")
SPECTRUM_POINTS = 120
MIN_PARTIAL_S = 0.25

Samples = Mapping[str, Sequence[Mapping[str, Any]]]


def write_all(run: RunDoc, metrics: Samples, out_dir: Path, *,
              others: Sequence[RunDoc] = (),
              file_stem: Callable[[str], str] = lambda name: name) -> list[Path]:
    """Every picture of ``run`` (and of ``others`` beside it in the spectra); the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [throughput(run, out_dir / "throughput.png"), latency(run, out_dir / "latency.png")]
    if any(metrics.values()):
        written.append(hosts(run, metrics, out_dir / "hosts.png"))
    for entry in run.get("benchmarks", ()):
        if not (entry.get("latency_us") or {}).get("count"):
            continue
        name = str(entry["name"])
        written.append(spectrum([run, *others], name, out_dir / f"spectrum-{file_stem(name)}.png"))
    for entry in run.get("benchmarks", ()):
        if "search" in entry and entry["search"]["rows"]:
            written.append(capacity(run, entry, out_dir / f"capacity-{file_stem(str(entry['name']))}.png"))
    return written


# ---------------------------------------------------------------------------------------------
# Over time


def run_start(run: RunDoc) -> float:
    """The epoch second the plots' time axis starts at: the first measured phase's start."""
    starts = [float(start) for _, p in _parts(run) if isinstance(start := p.get("started_at"), (int, float))]
    return min(starts) if starts else 0.0


def _parts(run: RunDoc) -> list[tuple[str, BenchmarkEntry]]:
    """(benchmark name, entry) for every measured part: each repetition of a repeated one, each
    step of a capacity search."""
    return [(str(e["name"]), p) for e in run.get("benchmarks", ())
            for p in (e.get("repeats") or e.get("steps") or (e,))]


def _placed(run: RunDoc) -> list[tuple[str, BenchmarkEntry, float]]:
    """(name, part, offset in seconds on the run's clock); parts without a start follow each other."""
    t0 = run_start(run)
    out, cursor = [], 0.0
    for name, part in _parts(run):
        started = part.get("started_at")
        offset = float(started) - t0 if isinstance(started, (int, float)) and t0 else cursor
        out.append((name, part, offset))
        cursor = offset + float(part.get("seconds") or len(part.get("timeseries") or ()))
    return out


def _color_of(run: RunDoc) -> dict[str, str]:
    names = list(dict.fromkeys(str(e["name"]) for e in run.get("benchmarks", ())))
    return {name: COLORS[i % len(COLORS)] for i, name in enumerate(names)}


def seconds_of(part: BenchmarkEntry) -> list[tuple[float, float, MergedSecond]]:
    """(start, end, point) of each second of a part's timeseries, relative to its start."""
    total = float(part.get("seconds") or 0.0)
    out = []
    for point in part.get("timeseries") or ():
        # A wall-clock second (bench.report.seconds) may begin before the part did: t < 0.
        t = float(point["t"])
        start = max(t, 0.0)
        end = min(t + 1.0, total) if total > start else t + 1.0
        if end - start >= MIN_PARTIAL_S:
            out.append((start, end, point))
    return out


def _steps(offset: float, spans: Sequence[tuple[float, float, Any]], values: Sequence[float]
           ) -> tuple[list[float], list[float]]:
    """x, y for ``ax.step(where="post")``: each value held from its span's start to its end."""
    xs = [offset + start for start, _, _ in spans] + [offset + spans[-1][1]]
    return xs, [*values, values[-1]]


def throughput(run: RunDoc, path: Path) -> Path:
    fig, ax = _figure()
    colors = _color_of(run)
    labelled: set[str] = set()
    for name, part, offset in _placed(run):
        spans = seconds_of(part)
        if not spans:
            continue
        rates = [int(p.get("ops") or 0) / (end - start) for start, end, p in spans]
        ax.step(*_steps(offset, spans, rates), where="post", linewidth=2, color=colors[name],
                label=None if name in labelled else name)
        labelled.add(name)
    _time_axis(ax)
    ax.set_ylabel("throughput (ops/s, all agents)")
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    _finish(fig, ax, f"Throughput per second — {_title(run)}", path)
    return path


def latency(run: RunDoc, path: Path) -> Path:
    fig, ax = _figure()
    colors = _color_of(run)
    labelled: set[str] = set()
    for name, part, offset in _placed(run):
        spans = [span for span in seconds_of(part) if span[2].get("ops")]
        if not spans:
            continue
        first = name not in labelled
        ax.step(*_steps(offset, spans, [p["p99"] / 1000 for _, _, p in spans]), where="post", linewidth=2,
                color=colors[name], label=f"{name} p99" if first else None)
        ax.step(*_steps(offset, spans, [p["p50"] / 1000 for _, _, p in spans]), where="post", linewidth=1.5,
                color=colors[name], linestyle="--", label=f"{name} p50" if first else None)
        labelled.add(name)
    _time_axis(ax)
    _log_ms_axis(ax)
    ax.set_ylabel("latency in each second (ms, log scale)")
    _finish(fig, ax, f"Latency over time: p99 solid, p50 dashed — {_title(run)}", path)
    return path


def hosts(run: RunDoc, metrics: Samples, path: Path) -> Path:
    fig = Figure(figsize=(SIZE[0], 8.5), dpi=DPI)
    FigureCanvasAgg(fig)
    cpu_ax, proc_ax, net_ax = fig.subplots(3, 1, sharex=True)
    t0 = run_start(run) or min((s[0]["t"] for s in metrics.values() if s), default=0.0)
    roles = {name: "+".join(info.get("roles") or ()) for name, info in (run.get("hosts") or {}).items()}
    for i, (host, samples) in enumerate(sorted(metrics.items())):
        if not samples:
            continue
        color = COLORS[i % len(COLORS)]
        label = f"{host} ({roles[host]})" if roles.get(host) else host
        xs = [float(s["t"]) - float(s.get("dt") or 1.0) / 2 - t0 for s in samples]  # mid-interval
        cpu = [host_metrics.busy_pct(s) for s in samples]
        cpu_ax.plot(xs, [math.nan if v is None else v for v in cpu], color=color, label=label)
        procs = [_server_cpu(s) for s in samples]
        if any(v is not None for v in procs):
            proc_ax.plot(xs, [math.nan if v is None else v for v in procs], color=color, label=label)
        net = [host_metrics.net_Bps(s) for s in samples]
        net_ax.plot(xs, [math.nan if n is None else (n[0] + n[1]) / 1e6 for n in net], color=color, label=label)
    for ax in (cpu_ax, proc_ax, net_ax):
        _shade_benchmarks(ax, run)
        ax.grid(True, alpha=0.3)
    cpu_ax.set_ylim(0, 105)
    cpu_ax.set_ylabel("host cpu busy\n(% of all cores)")
    cpu_ax.axhline(host_metrics.AGENT_CPU_LIMIT_PCT, color="red", linewidth=0.8, linestyle=":")
    cpu_ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", title="host (role)")
    proc_ax.set_ylim(bottom=0)
    proc_ax.set_ylabel("server processes cpu\n(% of one core)")
    net_ax.set_ylim(bottom=0)
    net_ax.set_ylabel("network rx+tx\n(MB/s, not loopback)")
    net_ax.set_xlabel("time since the first benchmark started (s)")
    fig.suptitle(f"Hosts per second — {_title(run)}")
    fig.text(0.01, 0.005, f"shaded: the benchmarks; dotted red: {host_metrics.AGENT_CPU_LIMIT_PCT:.0f}% cpu, "
             "above which an agent host may be the bottleneck", fontsize="small", color="dimgray")
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    fig.savefig(path)
    return path


def _server_cpu(sample: Mapping[str, Any]) -> float | None:
    procs = sample.get("procs")
    if not isinstance(procs, Mapping):
        return None
    values = [float(p["cpu_pct"]) for p in procs.values() if isinstance(p, Mapping) and p.get("cpu_pct") is not None]
    return sum(values) if values else None


def _shade_benchmarks(ax: Any, run: RunDoc) -> None:
    colors = _color_of(run)
    top = ax.get_subplotspec().is_first_row()
    for name, part, offset in _placed(run):
        length = float(part.get("seconds") or 0.0)
        if length <= 0:
            continue
        ax.axvspan(offset, offset + length, color=colors[name], alpha=0.12, linewidth=0)
        if top:
            _, k = split_label(str(part.get("name", name)))
            ax.text(offset + length / 2, 1.0, name if k is None else f"{name}#{k}", transform=ax.get_xaxis_transform(),
                    ha="center", va="bottom", fontsize="small", color=colors[name], clip_on=False)


# ---------------------------------------------------------------------------------------------
# The latency spectrum


def spectrum_points(encoded: str) -> tuple[list[float], list[float]]:
    """(x = 1/(1-p), latency in ms) from p = 0 up to the max, evenly spread on the log x axis."""
    h = hist.decode(encoded)
    count = h.get_total_count()
    if not count:
        return [], []
    top = math.log10(max(count, 10))
    xs = [10 ** (top * i / (SPECTRUM_POINTS - 1)) for i in range(SPECTRUM_POINTS)]
    ps = [min(100.0, 100.0 * (1 - 1 / x)) for x in xs]
    values = hist.percentiles(h, ps)
    return xs, [values[p] / 1000 for p in ps]


def spectrum(runs: Sequence[RunDoc], name: str, path: Path) -> Path:
    fig, ax = _figure()
    top = 10.0
    for i, run in enumerate(runs):
        entry = next((e for e in run.get("benchmarks", ()) if e.get("name") == name), None)
        if entry is None or not entry.get("histogram"):
            continue
        color = COLORS[i % len(COLORS)]
        who = _run_label(run) if len(runs) > 1 else name
        xs, ys = spectrum_points(entry["histogram"])
        if not xs:
            continue
        top = max(top, xs[-1])
        ax.plot(xs, ys, color=color, label=f"{who}: latency (corrected)" if entry.get("service_histogram") else who)
        if entry.get("service_histogram"):
            sx, sy = spectrum_points(entry["service_histogram"])
            ax.plot(sx, sy, color=color, linestyle="--", label=f"{who}: service time")
    ax.set_xscale("log")
    ax.set_xlim(1, top)
    ticks = [10 ** k for k in range(0, int(math.log10(top)) + 1)]
    ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: _percentile_label(x)))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("percentile (log scale of 1/(1-p))")
    _log_ms_axis(ax)
    ax.set_ylabel("latency (ms, log scale)")
    title = f"Latency by percentile — benchmark {name}"
    _finish(fig, ax, title if len(runs) > 1 else f"{title} — {_title(runs[0])}", path)
    return path


def capacity(run: RunDoc, entry: BenchmarkEntry, path: Path) -> Path:
    """A capacity search: each step's p99 (solid markers) and p50 (hollow) against its rate; a
    passing step round and green, a failing one a red cross; each latency SLO a dotted line; the
    found rate a vertical line."""
    found = entry["search"]
    rows = sorted(found["rows"], key=lambda r: float(r["rate"] or 0))
    fig, ax = _figure()
    for passed, color, marker in ((True, "tab:green", "o"), (False, "tab:red", "X")):
        mine = [r for r in rows if r["passed"] == passed and r["p99_us"] is not None]
        if mine:
            rates = [float(r["rate"]) for r in mine]
            ax.scatter(rates, [max(float(r["p99_us"] or 1.0), 1.0) / 1000 for r in mine], color=color, marker=marker,
                       s=60, zorder=3, label=f"p99, {'passed' if passed else 'failed'}")
            ax.scatter(rates, [max(float(r["p50_us"] or 1.0), 1.0) / 1000 for r in mine], facecolors="none",
                       edgecolors=color, marker="o", s=30, zorder=3, label=f"p50, {'passed' if passed else 'failed'}")
    measured = [r for r in rows if r["p99_us"] is not None]
    ax.plot([float(r["rate"]) for r in measured], [max(float(r["p99_us"] or 1.0), 1.0) / 1000 for r in measured],
            color="tab:gray", alpha=0.4, zorder=2)
    for text in found["slo"]:
        threshold = _slo_ms(str(text))
        if threshold is not None:
            ax.axhline(threshold, color="tab:purple", linestyle=":", label=f"SLO {text}")
    if found["found"] is not None:
        ax.axvline(float(found["found"]), color="tab:blue", linestyle="--",
                   label=f"found: {float(found['found']):,.0f} ops/s")
    ax.set_xlabel("intended rate of the step (ops/s)")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
    _log_ms_axis(ax)
    ax.set_ylabel("latency (ms, log scale)")
    _finish(fig, ax, f"Capacity search — benchmark {entry['name']} — {_title(run)}", path)
    return path


def _slo_ms(text: str) -> float | None:
    """A latency SLO's threshold in ms (``"p99 < 5ms"`` -> 5.0); None for any other."""
    from bench.spawn import expectations

    try:
        e = expectations.parse(text)
    except expectations.ExpectError:
        return None
    return e.threshold * expectations.UNITS[e.unit] / 1000 if e.metric in expectations.LATENCY else None


def _percentile_label(x: float) -> str:
    if x <= 1:
        return "0%"
    p = 100 * (1 - 1 / x)
    return f"{p:.{max(0, round(math.log10(x)) - 2)}f}%"


def _log_ms_axis(ax: Any) -> None:
    """A log latency axis labelled at 1, 2 and 5 of every decade (decades alone are too sparse)."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(_ms_label))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _ms_label(value: float, _: Any = None) -> str:
    return f"{value:g}" if value >= 0.001 else f"{value:.1e}"


# ---------------------------------------------------------------------------------------------


def _figure() -> tuple[Figure, Any]:
    fig = Figure(figsize=SIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _time_axis(ax: Any) -> None:
    ax.set_xlabel("time since the first benchmark started (s)")
    ax.set_xlim(left=0)


def _finish(fig: Figure, ax: Any, title: str, path: Path) -> None:
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    fig.tight_layout()
    fig.savefig(path)


def _title(run: RunDoc) -> str:
    return f"run {run.get('name', '')} ({run.get('run_id', '')})"


def _run_label(run: RunDoc) -> str:
    return str(run.get("run_id", "?"))
