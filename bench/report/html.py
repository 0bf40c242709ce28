"""``inv report --html``: a run as one self-contained HTML page (no file or network fetched).

Sections: the run, its expectations (pass/fail), the benchmark table, one card per benchmark
(its key figures and its latency spectrum), the time series (throughput, latency per second,
hosts), failures and warnings, the host and agent tables. Pictures are inline PNGs
(``data:`` URLs). A picture that cannot be shown says so on the browser console (its
``onerror``), so a broken page is caught by a console check, not only by eye.

Each benchmark's card is ``<section class="benchmark" data-benchmark="NAME">``, its spectrum
``<img data-benchmark="NAME">`` and its table row ``<tr data-benchmark="NAME">``: stable hooks for
whoever checks the page.
"""

from __future__ import annotations

import base64
import html
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bench.report import tables
from bench.report.document import BenchmarkEntry, RunDoc

TIME_SERIES = ("throughput.png", "latency.png", "hosts.png")

_CSS = ("body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1250px;color:#222;padding:0 1em}"
        "table{border-collapse:collapse;margin:.5em 0;font-size:14px}"
        "th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%}figure{margin:1em 0}"
        ".pass{color:#17702a;font-weight:600}.fail{color:#b00020;font-weight:600}"
        "section.benchmark{border:1px solid #ddd;border-radius:6px;padding:.5em 1em;margin:1em 0}"
        "ul.notes li{margin:.2em 0}")


def page(run: RunDoc, pictures: Mapping[str, bytes], *, notes: Sequence[str] = (),
         file_stem: Callable[[str], str] = lambda name: name) -> str:
    """The page of ``run``; ``pictures`` by file name (bench.report.plots.write_all's names),
    ``notes`` the failure and warning lines."""
    esc = html.escape
    run_id = str(run.get("run_id", ""))
    parts = [f"<h1>fleetbench run {esc(str(run.get('name')))}</h1>",
             f"<p>run <code>{esc(run_id)}</code>, started {_date(run.get('started_at'))} UTC, "
             f"status <b>{esc(str(run.get('status')))}</b></p>"]
    parts += _expectations(run)
    tabled = tables.html_tables(run)
    parts.append("<h2>Benchmarks</h2>\n" + _mark_rows(tabled.pop("benchmarks"), _names(run)))
    for entry in run.get("benchmarks", ()):
        stem = file_stem(str(entry["name"]))
        parts.append(_card(entry, pictures.get(f"spectrum-{stem}.png"), pictures.get(f"capacity-{stem}.png")))
    series = [name for name in TIME_SERIES if name in pictures]
    if series:
        parts.append("<h2>Over time</h2>")
        parts += [_figure(pictures[name], name.removesuffix(".png")) for name in series]
    if notes:
        parts.append("<h2>Failures and warnings</h2>\n<ul class=\"notes\">"
                     + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    for title, fragment in tabled.items():
        parts.append(f"<h2>{esc(title.capitalize())}</h2>\n{fragment}")
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>fleetbench {esc(run_id)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(parts) + "\n</body></html>\n")


def _expectations(run: RunDoc) -> list[str]:
    esc = html.escape
    rows = [(str(e.get("name")), v) for e in run.get("benchmarks", ()) for v in e.get("expectations") or ()]
    if not rows:
        return []
    cells = "".join(
        f"<tr data-benchmark=\"{esc(name)}\"><td>{esc(name)}</td><td>{esc(str(v.get('expect')))}</td>"
        f"<td>{esc(str(v.get('measured_text')))}</td>"
        f"<td class=\"{'pass' if v.get('passed') else 'fail'}\">{'ok' if v.get('passed') else 'FAILED'}</td></tr>"
        for name, v in rows)
    failed = sum(1 for _, v in rows if not v.get("passed"))
    verdict = f"<p class=\"{'fail' if failed else 'pass'}\">{failed} of {len(rows)} expectation(s) failed</p>"
    return ["<h2>Expectations</h2>", verdict,
            "<table><tr><th>benchmark</th><th>expect</th><th>measured</th><th>verdict</th></tr>" + cells + "</table>"]


def _card(entry: BenchmarkEntry, spectrum: bytes | None, capacity: bytes | None = None) -> str:
    esc = html.escape
    name = str(entry["name"])
    lat = entry.get("latency_us") or {}
    figures = [("ops/s", f"{float(entry.get('ops_per_s') or 0):,.0f}"), ("ops", f"{int(entry.get('ops') or 0):,}"),
               ("errors", f"{int(entry.get('errors') or 0):,}"),
               ("agents ok", f"{entry.get('agents_ok')} of {entry.get('agents')}")]
    figures += [(k, _ms(lat.get(k))) for k in ("p50", "p90", "p99", "p99.9", "max")]
    head = "".join(f"<th>{esc(k)}</th>" for k, _ in figures)
    row = "".join(f"<td>{esc(v)}</td>" for _, v in figures)
    picture = (_figure(spectrum, f"latency spectrum of {name}", name) if spectrum is not None
               else "<p>no latency was recorded, so no spectrum</p>")
    if capacity is not None:  # a capacity search: p99 against the rate of each step
        section = entry.get("search")
        text = section["text"] if section is not None else ""
        picture = f"<p>{esc(text)}</p>" + _figure(capacity, f"capacity search of {name}") \
            + picture
    return (f"<section class=\"benchmark\" data-benchmark=\"{esc(name)}\"><h3>{esc(name)}</h3>"
            f"<table><tr>{head}</tr><tr>{row}</tr></table>{picture}</section>")


def _figure(png: bytes, caption: str, benchmark: str | None = None) -> str:
    esc = html.escape
    data = base64.b64encode(png).decode("ascii")
    mark = f' data-benchmark="{esc(benchmark)}"' if benchmark is not None else ""
    return (f"<figure><img alt=\"{esc(caption)}\"{mark} src=\"data:image/png;base64,{data}\" "
            "onerror=\"console.error('fleetbench report: picture failed to load: ' + this.alt)\">"
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def _names(run: RunDoc) -> list[str]:
    """The first cell of each benchmark table row, in order (repetitions have their own rows)."""
    return [str(row[0]) for row in tables.benchmark_rows(run)[1]]


def _mark_rows(fragment: str, names: Sequence[str]) -> str:
    """Give each body row of tabulate's html table its benchmark's ``data-benchmark``."""
    head, sep, body = fragment.partition("<tbody>")
    if not sep:
        return fragment
    rows = body.split("<tr>")
    marked = [rows[0]] + [f"<tr data-benchmark=\"{html.escape(names[i])}\">" + row if i < len(names) else "<tr>" + row
                          for i, row in enumerate(rows[1:])]
    return head + sep + "".join(marked)


def _date(epoch: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch)) if isinstance(epoch, (int, float)) else "-"


def _ms(us: Any) -> str:
    return f"{us / 1000:.3g} ms" if isinstance(us, (int, float)) else "-"
