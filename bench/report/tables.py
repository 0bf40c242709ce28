"""Tables of a run (run.json, typed in bench.report.document) for the terminal, Markdown, CSV or JSON.

Rows hold plain values (ints, floats rounded to their displayed precision, None when there is
nothing to show); only the text formats add thousands separators and fixed decimals.
Latencies are shown in milliseconds with three decimals (microsecond resolution, as recorded).
A benchmark run with ``repeat > 1`` gives its folded row (``name``) followed by one row per
repetition (``name#1`` ...).

Open-loop runs (a ``rate``): when any benchmark has service time, the benchmark table gains
``late``, ``svc p50`` and ``svc p99``: its p50..max are then the coordinated-omission corrected
latency (from each op's intended start) and ``svc`` the service time (from its actual send).
:func:`report` composes what ``inv collect`` and ``inv report`` print: benchmarks, hosts
(:func:`host_rows`), agents with ``detail``, and the warnings of ``bench.report.hosts.warnings``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

from tabulate import tabulate

from bench.report import hosts as host_metrics
from bench.report import search as search_report
from bench.report import server_nodes
from bench.report.document import BenchmarkEntry, RunDoc

FORMATS = ("simple", "github", "csv", "json")

# (header, format spec for the text tables, alignment)
_BENCHMARK_COLUMNS = (
    ("benchmark", "", "left"), ("agents", "", "right"), ("ops", ",", "right"), ("errors", ",", "right"),
    ("seconds", ".2f", "right"), ("ops/s", ",.1f", "right"), ("p50 (ms)", ".3f", "right"),
    ("p90 (ms)", ".3f", "right"), ("p99 (ms)", ".3f", "right"), ("p99.9 (ms)", ".3f", "right"),
    ("max (ms)", ".3f", "right"),
)
_AGENT_COLUMNS = (
    ("benchmark", "", "left"), ("agent", "", "right"), ("host", "", "left"), ("status", "", "left"),
    ("ops", ",", "right"), ("errors", ",", "right"), ("seconds", ".2f", "right"), ("ops/s", ",.1f", "right"),
    ("p50 (ms)", ".3f", "right"), ("p99 (ms)", ".3f", "right"), ("max (ms)", ".3f", "right"),
)
_OPEN_LOOP_COLUMNS = (
    ("late", ",", "right"), ("svc p50 (ms)", ".3f", "right"), ("svc p99 (ms)", ".3f", "right"),
)
_HOST_COLUMNS = (
    ("host", "", "left"), ("role", "", "left"), ("samples", "", "right"), ("cpu %", ".1f", "right"),
    ("cpu max %", ".1f", "right"), ("mem max (MB)", ",.0f", "right"), ("net rx (MB/s)", ".2f", "right"),
    ("net tx (MB/s)", ".2f", "right"), ("disk rd (MB/s)", ".2f", "right"), ("disk wr (MB/s)", ".2f", "right"),
    ("server cpu %", ".1f", "right"), ("server rss (MB)", ",.1f", "right"),
)
_FACT_COLUMNS = (
    ("host", "", "left"), ("cpu", "", "left"), ("cores", "", "right"), ("memory (GB)", ".1f", "right"),
    ("kernel", "", "left"), ("os", "", "left"), ("python", "", "left"), ("agent pex", "", "left"),
)
FACT_HEADERS = tuple(c[0] for c in _FACT_COLUMNS)
HOST_HEADERS = tuple(c[0] for c in _HOST_COLUMNS)
AGENT_HEADERS = tuple(c[0] for c in _AGENT_COLUMNS)

Rows = list[list[Any]]


def benchmark_rows(run: RunDoc) -> tuple[list[str], Rows]:
    """One row per benchmark (and per repetition of a repeated one); open-loop columns if any."""
    open_loop = _open_loop(run)
    rows = [_benchmark_row(entry) + (_open_loop_cells(entry) if open_loop else []) for entry in _entries(run)]
    columns = _benchmark_columns(run)
    return [c[0] for c in columns], rows


def host_rows(run: RunDoc) -> tuple[list[str], Rows]:
    """One row per host of run.json's ``hosts`` (bench.report.hosts): its whole run, MB = 10^6 bytes.

    ``server cpu %`` is the server processes' mean cpu in % of one core (summed over the
    host's nodes), ``server rss`` their largest resident size (summed likewise).
    """
    rows: Rows = []
    for name, info in (run.get("hosts") or {}).items():
        m = info.get("metrics") or {}
        cpu, net, disk = m.get("cpu_pct") or {}, m.get("net_Bps") or {}, m.get("disk_Bps") or {}
        procs = m.get("procs") or []
        cpus = [p["cpu_pct_mean"] for p in procs if p.get("cpu_pct_mean") is not None]
        rss = [p["rss_max_bytes"] for p in procs if p.get("rss_max_bytes") is not None]
        rows.append([name, "+".join(info.get("roles") or ()) or "-", m.get("samples", 0), _r(cpu.get("mean"), 1),
                     _r(cpu.get("max"), 1), _mb(m.get("mem_used_max_bytes"), 0), _mb(net.get("rx_mean"), 2),
                     _mb(net.get("tx_mean"), 2), _mb(disk.get("read_mean"), 2), _mb(disk.get("write_mean"), 2),
                     _r(sum(cpus), 1) if cpus else None, _mb(sum(rss), 1) if rss else None])
    return list(HOST_HEADERS), rows


def agent_rows(run: RunDoc) -> tuple[list[str], Rows]:
    """One row per agent: those with a result (status ok, fatal or interrupted), then failed ones."""
    rows: Rows = []
    for entry in run.get("benchmarks", ()):
        for part in entry.get("repeats") or (entry,):
            name = part["name"]
            for r in part.get("agent_results", ()):
                count = r.get("count", r["ops"])
                rows.append([name, r["agent_num"], r.get("host"), r.get("status", "ok"), r["ops"], r["errors"],
                             round(r["elapsed_s"], 2), round(r["ops_per_s"], 1), _ms(r["p50"], count),
                             _ms(r["p99"], count), _ms(r["max"], count)])
            for f in part.get("failures", ()):
                if not f.get("partial"):
                    rows.append([name, f["agent_num"], f.get("host"), "failed"] + [None] * 7)
    return list(AGENT_HEADERS), rows


def failure_lines(run: RunDoc) -> list[str]:
    """``"<benchmark>: agent <n> on <host>: <error>"`` for every agent that failed or stopped early."""
    lines = []
    for entry in run.get("benchmarks", ()):
        for part in entry.get("repeats") or (entry,):
            for f in part.get("failures", ()):
                error = " ".join(str(f.get("error", "")).split())
                lines.append(f"{part['name']}: agent {f['agent_num']} on {f.get('host')}: {error}")
    return lines


def render(run: RunDoc, fmt: str = "simple", *, detail: bool = False) -> str:
    """The benchmark table (or with ``detail`` the agent table) of a run, without a final newline.

    ``simple`` and ``github`` are followed by the failure lines, if any; ``csv`` and ``json``
    hold only the rows (json: a list of objects keyed by the headers).
    """
    _check_format(fmt)
    headers, rows = agent_rows(run) if detail else benchmark_rows(run)
    columns = _AGENT_COLUMNS if detail else _benchmark_columns(run)
    text = _table(headers, rows, columns, fmt)
    if fmt in ("json", "csv"):
        return text
    failures = failure_lines(run)
    if failures:
        bullet = "- " if fmt == "github" else "  "
        text += "\n\nfailures:\n" + "\n".join(bullet + line for line in failures)
    return text


def fact_rows(run: RunDoc) -> tuple[list[str], Rows]:
    """One row per host that reported facts (bench.agent.hostfacts); pex: its sha256 prefix."""
    rows: Rows = []
    for name, info in (run.get("hosts") or {}).items():
        f = info.get("facts")
        if not f:
            continue
        python = f.get("python") or {}
        memory = f.get("memory_total_bytes")
        agent = next((p for p in f.get("pex") or () if p.get("path") == f.get("agent_pex")), None)
        rows.append([name, f.get("cpu_model"), f.get("usable_cores") or f.get("logical_cores"),
                     None if memory is None else round(memory / 1e9, 1), f.get("kernel"), f.get("os"),
                     " ".join(str(v) for v in (python.get("implementation"), python.get("version")) if v) or None,
                     (agent.get("sha256") or "")[:12] or None if agent else None])
    return list(FACT_HEADERS), rows


def html_tables(run: RunDoc, *, detail: bool = True) -> dict[str, str]:
    """The tables as HTML fragments (escaped), by title: for ``inv report --html``."""
    out = {"benchmarks": _table(*benchmark_rows(run), _benchmark_columns(run), "html")}
    out.update({title: _table(headers, rows, search_report.COLUMNS, "html")
                for title, headers, rows in search_report.tables(run)})
    if run.get("hosts"):
        out["hosts"] = _table(*host_rows(run), _HOST_COLUMNS, "html")
        out["host facts"] = _table(*fact_rows(run), _FACT_COLUMNS, "html")
    if server_nodes.has_versions(run):
        out["server nodes"] = _table(*server_nodes.node_rows(run), server_nodes.COLUMNS, "html")
    if detail:
        out["agents"] = _table(*agent_rows(run), _AGENT_COLUMNS, "html")
    return out


def render_hosts(run: RunDoc, fmt: str = "simple") -> str:
    """The host table alone (empty rows when the run has no host metrics)."""
    _check_format(fmt)
    headers, rows = host_rows(run)
    return _table(headers, rows, _HOST_COLUMNS, fmt)


def report(run: RunDoc, fmt: str = "simple", *, detail: bool = False) -> str:
    """Everything ``inv collect`` / ``inv report`` print, in one format.

    simple/github: the benchmark table (and failures), the host table when the run has host
    metrics, with ``detail`` the host facts, the server nodes (when they said their version) and the agent
    table, then the warnings. csv: those tables, each after
    a ``# <name>`` line, blank-line separated. json: ``{"benchmarks": [...], "hosts": [...],
    "host facts": [...], "agents": [...] (detail only), "failures": [...], "warnings": [...]}``.
    """
    _check_format(fmt)
    warnings = host_metrics.warnings(run)
    sections = [("benchmarks", render(run, fmt))]
    sections += [(title, _table(headers, rows, search_report.COLUMNS, fmt))
                 for title, headers, rows in search_report.tables(run)]
    if run.get("hosts"):
        sections.append(("hosts", render_hosts(run, fmt)))
    if detail:
        if run.get("hosts"):
            sections.append(("host facts", _table(*fact_rows(run), _FACT_COLUMNS, fmt)))
        if server_nodes.has_versions(run):
            sections.append(("server nodes", _table(*server_nodes.node_rows(run), server_nodes.COLUMNS, fmt)))
        sections.append(("agents", _table(*agent_rows(run), _AGENT_COLUMNS, fmt)))
    if fmt == "json":
        data = {name: json.loads(text) for name, text in sections}
        data["failures"] = failure_lines(run)
        data["warnings"] = warnings
        return json.dumps(data, indent=2)
    if fmt == "csv":
        return "\n\n".join(f"# {name}\n{text}" for name, text in sections)
    bullet = "- " if fmt == "github" else "  "
    parts = [text if name == "benchmarks" else f"{name}:\n{text}" for name, text in sections]
    if warnings:
        parts.append("warnings:\n" + "\n".join(bullet + line for line in warnings))
    return "\n\n".join(parts)


def plain_table(headers: list[str], rows: Rows, fmt: str = "simple") -> str:
    """Any table of plain values (shown as they are, left-aligned) in one of FORMATS."""
    _check_format(fmt)
    return _table(headers, rows, tuple((h, "", "left") for h in headers), fmt)


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown table format {fmt!r}; one of {', '.join(FORMATS)}")


def _table(headers: list[str], rows: Rows, columns: tuple[tuple[str, str, str], ...], fmt: str) -> str:
    if fmt == "json":
        return json.dumps([dict(zip(headers, row, strict=False)) for row in rows], indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(headers)
        writer.writerows(rows)
        return out.getvalue().rstrip("\n")
    return tabulate(
        [[_format(value, spec) for value, (_, spec, _) in zip(row, columns, strict=False)] for row in rows],
        headers=headers,
        tablefmt=fmt,
        disable_numparse=True,
        colalign=[align for _, _, align in columns],
    )


def _open_loop(run: RunDoc) -> bool:
    return any(entry.get("service_us") for entry in _entries(run))


def _benchmark_columns(run: RunDoc) -> tuple[tuple[str, str, str], ...]:
    return _BENCHMARK_COLUMNS + (_OPEN_LOOP_COLUMNS if _open_loop(run) else ())


def _open_loop_cells(entry: BenchmarkEntry) -> list[Any]:
    service = entry.get("service_us") or {}
    count = service.get("count", 0)
    if not service:
        return [None, None, None]
    return [entry.get("late_ops", 0), _ms(service.get("p50", 0), count), _ms(service.get("p99", 0), count)]


def _r(value: Any, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


def _mb(value: Any, digits: int) -> float | None:
    return None if value is None else round(float(value) / 1e6, digits)


def _entries(run: RunDoc) -> Iterator[BenchmarkEntry]:
    for entry in run.get("benchmarks", ()):
        yield entry
        yield from entry.get("repeats", ())


def _benchmark_row(entry: BenchmarkEntry) -> list[Any]:
    agents, ok = entry["agents"], entry["agents_ok"]
    latency = entry.get("latency_us") or {}
    count = latency.get("count", 0)
    return [
        entry["name"],
        str(agents) if ok == agents else f"{ok}/{agents}",
        entry["ops"],
        entry["errors"],
        round(entry["seconds"], 2),
        round(entry["ops_per_s"], 1),
        *(_ms(latency.get(key, 0), count) for key in ("p50", "p90", "p99", "p99.9", "max")),
    ]


def _ms(microseconds: Any, count: float) -> float | None:
    return microseconds / 1000 if count else None


def _format(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    if not spec:
        return str(value)
    return format(value, spec)
