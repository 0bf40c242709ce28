"""A run's per-second series as InfluxDB line protocol (export/influx.lp).

One line per benchmark second, oldest first within each benchmark (each repetition of a repeated
benchmark in turn), timestamps in nanoseconds (the start of the second)::

    fleetbench,benchmark=<name>,run=<run id> agents=2i,ops=1990i,errors=0i,p50_us=211,p90_us=...,
        p99_us=...,p99_9_us=...,max_us=...,mean_us=... 1790000000000000000

``ops``, ``errors`` and ``agents`` (how many agents reported that second) are integers; the
latency fields (microseconds, the exact merge of that second's histograms, bench.report.seconds)
are floats in every line, so that a bucket never sees one field with two types, and are left out
of a second without ops. Write it with ``influx write --bucket B --file influx.lp`` (precision ns,
the default).

Escaping, as the protocol has it: in the measurement a comma or space, in tag keys, tag values
and field keys also an equals sign, is preceded by a backslash. The protocol has no escape for a
backslash, so a backslash that would end a tag value or stand before an escaped character cannot
be written: it becomes ``/``. Line breaks cannot be carried either and become spaces; an empty
tag is left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bench.report import timeline
from bench.report.document import RunDoc
from bench.wire import hist

MEASUREMENT = "fleetbench"
LATENCY_FIELDS = tuple((hist.percentile_key(p), hist.percentile_key(p).replace(".", "_") + "_us")
                       for p in hist.PERCENTILES) + (("max", "max_us"), ("mean", "mean_us"))
_SPECIAL = " ,="


def render(run: RunDoc) -> str:
    run_id = str(run.get("run_id", ""))
    lines = []
    for name, part in timeline.parts(run):
        tags = _tags({"benchmark": name, "run": run_id})
        for t, point in timeline.seconds(part):
            fields = [(key, f"{_int(point.get(key))}i") for key in ("agents", "ops", "errors")
                      if point.get(key) is not None]
            if point.get("ops"):
                fields += [(field, _float(value)) for key, field in LATENCY_FIELDS
                           if isinstance(value := point.get(key), (int, float))]
            body = ",".join(f"{escape_key(k)}={v}" for k, v in fields)
            lines.append(f"{escape_measurement(MEASUREMENT)}{tags} {body} {_nanoseconds(t)}")
    return "".join(line + "\n" for line in lines)


def _tags(tags: Mapping[str, str]) -> str:
    """``,k=v`` for each non-empty tag, sorted by key (the order InfluxDB stores them in)."""
    return "".join(f",{escape_key(k)}={escape_key(v)}" for k, v in sorted(tags.items()) if v)


def escape_measurement(text: str) -> str:
    return _escape(text, " ,")


def escape_key(text: str) -> str:
    """A tag key, tag value or field key."""
    return _escape(text, _SPECIAL)


def _escape(text: str, special: str) -> str:
    text = text.replace("\r", " ").replace("\n", " ")
    out = []
    for i, char in enumerate(text):
        following = text[i + 1] if i + 1 < len(text) else ""
        if char == "\\" and (not following or following in special):
            char = "/"  # no escape for it: read back it would escape what follows, or the separator
        out.append("\\" + char if char in special else char)
    return "".join(out)


def _nanoseconds(t: float) -> int:
    """Epoch seconds as integer ns, through whole microseconds: a float holds an epoch in us
    exactly, not in ns (t * 1e9 would write .25 s as .249999872 s)."""
    return round(t * 1_000_000) * 1000


def _int(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def _float(value: float) -> str:
    """A float field: plain digits are a float in line protocol (an integer needs an ``i``), so a
    whole value drops its ``.0``; repr keeps a fraction exact."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))
