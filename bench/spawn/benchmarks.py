"""The ``[[benchmark]]`` tables: the amount of work, the load shape, and the workload's params
checked against its catalogue entry and against the server kind. Pure: no I/O."""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from typing import Any

from bench.spawn import expectations, secrets
from bench.spawn.checks import BAD, MISSING, Problems, Table, as_float, describe, is_int, not_one_of, show_number
from bench.spawn.schema import (
    BENCHMARK_KEYS,
    DEFAULT_SEARCH_LATE,
    DEFAULT_SEARCH_PRECISION,
    DEFAULT_SEARCH_STEP_S,
    SEARCH_KEYS,
    Benchmark,
    Search,
)
from bench.wire.catalogue import CATALOGUE, Param, Workload, check_params

# A benchmark name is a label carried as data (quoted, JSON, never a path: directories use a
# slug of it), so any one-line text will do; '#' is kept for repetition labels (name#k).
BENCHMARK_NAME = re.compile(r"[^#\x00-\x1f\x7f-\x9f\u2028\u2029]{1,100}\Z")
_BENCHMARK_NAME_HELP = "any text on one line without '#', at most 100 characters"
_MAX_DEPTH = 32


def parse_benchmarks(top: Table, problems: Problems, server_kind: str | None) -> list[Benchmark]:
    """Every good ``[[benchmark]]`` of ``top``; names unique, ``parallel`` groups repeating alike.
    ``server_kind`` is None when the server table was bad (the fit to it is then not checked)."""
    value = top.raw("benchmark")
    if value is MISSING:
        top.missing("benchmark", "missing; add at least one [[benchmark]] table")
        return []
    if not isinstance(value, (list, tuple)):
        top.problem("benchmark", f"expected an array of tables ([[benchmark]]), got {describe(value)}")
        return []
    if not value:
        top.problem("benchmark", "must hold at least one benchmark")
        return []
    out: list[Benchmark] = []
    names: dict[str, int] = {}
    for i, item in enumerate(value):
        where = f"benchmark[{i}]"
        if not isinstance(item, Mapping):
            problems.add(where, f"expected a table, got {describe(item)}")
            continue
        bench = _benchmark(Table(item, where, BENCHMARK_KEYS, problems), server_kind)
        name = item.get("name")
        if isinstance(name, str):
            if name in names:
                problems.add(f"{where}.name", f"{name!r} is already the name of benchmark[{names[name]}]")
                continue
            names[name] = i
        if bench is not None:
            out.append(bench)
    _check_parallel(out, names, problems)
    return out


def _benchmark(t: Table, server_kind: str | None) -> Benchmark | None:
    name = t.text("name", pattern=BENCHMARK_NAME, pattern_help=_BENCHMARK_NAME_HELP)
    if name is MISSING:
        name = t.missing("name", "missing")
    workload_name = t.choice("workload", list(CATALOGUE))
    if workload_name is MISSING:
        workload_name = t.missing("workload", f"missing; one of {', '.join(CATALOGUE)}")
    agents = t.integer("agents", 1, minimum=1)
    search = _search(t) if t.has("search") else None
    iterations, duration = _amount(t, agents) if search is None else (None, None)
    warmup = t.duration("warmup", 0.0)
    connections = t.integer("connections", 1, minimum=1)
    pipeline = t.integer("pipeline", 1, minimum=1)
    rate = t.number("rate", None, above=0)
    repeat = t.integer("repeat", 1, minimum=1)
    parallel = t.text("parallel", None)
    if workload_name == "http" and is_int(pipeline) and pipeline > 1:
        pipeline = t.problem("pipeline", "workload 'http' sends one request at a time per connection "
                                         "(HTTP/1.1, no pipelining); raise connections instead")
    params: Any = BAD
    if workload_name is not BAD:
        workload = CATALOGUE[workload_name]
        params = _params(t, workload)
        if server_kind is not None and not _fits(t, workload, server_kind, params):
            params = BAD
    elif t.has("params") and not isinstance(t.raw("params"), Mapping):
        t.problem("params", f"expected a table, got {describe(t.raw('params'))}")
    expectations = _expectations(t, searching=t.has("search"))
    values = (name, workload_name, agents, iterations, duration, warmup, connections, pipeline, rate,
              repeat, parallel, params, expectations, search)
    if any(v is BAD or v is MISSING for v in values):
        return None
    return Benchmark(name, workload_name, agents, iterations, None if duration is None else float(duration),
                     float(warmup), connections, pipeline, None if rate is None else float(rate),
                     repeat, parallel, params, expectations, search)


#: Keys a search decides itself: given beside it, they are refused (naming the search's key path).
_NOT_WITH_SEARCH = {"rate": "the search chooses each step's rate", "iterations": "each step runs for its step time",
                    "duration": "each step runs for the search's step time", "repeat": "its steps are the repetitions",
                    "parallel": "a search's steps run alone on the fleet"}


def _search(t: Table) -> Any:
    """``search = { rate = [low, high], slo = [...], step = "20s", precision = "5%" }``."""
    ok = True
    for key, why in _NOT_WITH_SEARCH.items():
        if t.has(key):
            t.problems.add(t.at("search"), f"cannot be given with {key} ({why}); remove {t.at(key)}")
            ok = False
    s = t.table("search", SEARCH_KEYS)
    if s is None:
        return BAD
    rate = s.raw("rate")
    low = high = None
    if rate is MISSING:
        s.missing("rate", "missing; the rates to search between, e.g. [1000, 400000] (ops/s)")
        ok = False
    elif (not isinstance(rate, (list, tuple)) or len(rate) != 2
          or any(as_float(v) is None for v in rate)):
        s.problem("rate", f"expected [low, high] in ops/s, e.g. [1000, 400000], got {describe(rate)}")
        ok = False
    else:
        low, high = (as_float(v) for v in rate)
        if not (low is not None and high is not None and 0 < low < high):
            s.problem("rate", f"needs 0 < low < high, got [{show_number(rate[0])}, {show_number(rate[1])}]")
            ok = False
    slo = s.raw("slo")
    if slo is MISSING:
        s.missing("slo", 'missing; what every step must meet, e.g. ["p99 < 5ms", "errors == 0"]')
        ok = False
    elif not isinstance(slo, (list, tuple)) or not slo:
        s.problem("slo", f'expected a non-empty array like ["p99 < 5ms", "errors == 0"], got {describe(slo)}')
        ok = False
    else:
        ok = _each_expectation(t, s.at("slo"), slo, "rate is what the search finds: an SLO is about latency, "
                                                    "errors or ops/s; put \"rate >= N\" in expect") and ok
    step = s.duration("step", DEFAULT_SEARCH_STEP_S, positive=True)
    precision = _percent(s, "precision", DEFAULT_SEARCH_PRECISION)
    late = _percent(s, "late", DEFAULT_SEARCH_LATE)
    if not ok or step is BAD or precision is BAD or late is BAD:
        return BAD
    assert low is not None and high is not None
    return Search(float(low), float(high), tuple(slo), float(step), precision, late)


def _percent(s: Table, key: str, default: float) -> Any:
    """``key = "N%"`` (0 < N < 100) as a fraction."""
    value = s.raw(key)
    if value is MISSING:
        return default
    text = value.strip() if isinstance(value, str) else None
    number = float(text[:-1]) if text and text.endswith("%") and _NUMBER.match(text[:-1]) else None
    if number is None:
        return s.problem(key, f'expected a percentage such as "5%", got {describe(value)}')
    if not 0 < number < 100:
        return s.problem(key, f"must be above 0% and below 100%, got {describe(value)}")
    return number / 100


_NUMBER = re.compile(r"\s*[0-9]+(\.[0-9]+)?\s*\Z")


def _expectations(t: Table, searching: bool = False) -> Any:
    """``expect``: a list of bench.spawn.expectations, each one checked and named; ``rate`` (the
    rate a capacity search found) only on a benchmark with a search."""
    value = t.raw("expect")
    if value is MISSING:
        return ()
    if not isinstance(value, (list, tuple)):
        return t.problem("expect", f"expected an array of expectations like [\"p99 < 5ms\"], got {describe(value)}")
    no_rate = None if searching else "rate is the rate a capacity search found: this benchmark has no search"
    return tuple(value) if _each_expectation(t, t.at("expect"), value, no_rate) else BAD


def _each_expectation(t: Table, where: str, texts: Any, no_rate: str | None) -> bool:
    """Every text a good expectation (else a problem at ``where[i]``); ``no_rate``: why ``rate`` is not
    allowed here (None: it is)."""
    ok = True
    for i, text in enumerate(texts):
        try:
            parsed = expectations.parse(text)
        except expectations.ExpectError as exc:
            t.problems.add(f"{where}[{i}]", str(exc))
            ok = False
            continue
        if parsed.metric == "rate" and no_rate is not None:
            t.problems.add(f"{where}[{i}]", no_rate)
            ok = False
    return ok


def _amount(t: Table, agents: Any) -> tuple[Any, Any]:
    """``(iterations, duration)``: exactly one of them given, at least one iteration per agent."""
    iterations = t.integer("iterations", None, minimum=1)
    duration = t.duration("duration", None, positive=True)
    if t.has("iterations") and t.has("duration"):
        t.problem("duration", "give either iterations or duration, not both")
    elif not t.has("iterations") and not t.has("duration"):
        iterations = BAD
        if not t.misspelt & {"iterations", "duration"}:
            t.problem("iterations", "missing; give iterations (total ops) or duration (e.g. \"30s\")")
    elif is_int(iterations) and is_int(agents) and iterations < agents:
        iterations = t.problem("iterations", f"{iterations} is fewer than agents ({agents}); every agent needs work")
    return iterations, duration


def _params(t: Table, workload: Workload) -> Any:
    value = t.raw("params")
    if value is MISSING:
        value = {}
    if not isinstance(value, Mapping):
        return t.problem("params", f"expected a table, got {describe(value)}")
    names = [p.name for p in workload.params]
    table = Table(value, t.at("params"), names, t.problems, what=f"param of workload {workload.name!r}")
    ok = not any(k not in names for k in value)
    params: dict[str, Any] = {}
    for param in workload.params:
        if param.name not in value:
            params[param.name] = copy.deepcopy(param.default)
            continue
        checked = _param(table, param, value[param.name])
        if checked is BAD:
            ok = False
        params[param.name] = checked
    if ok:
        ok = _secrets(t, workload, params)
    if ok:
        for key, message in check_params(workload.name, secrets.stand_in(params)):
            t.problems.add(f"{t.at('params')}.{key}", message)
            ok = False
    return params if ok else BAD


#: Where a param may hold secrets (``{ env = "NAME" }``): (workload, param).
SECRET_PARAMS = (("http", "headers"), ("python", "options"))


def _secrets(t: Table, workload: Workload, params: dict[str, Any]) -> bool:
    """Turn the ``{ env = "NAME" }`` values of the params that may hold secrets into EnvSecrets;
    a reference that names no variable is a problem."""
    ok = True
    for name, param in SECRET_PARAMS:
        if workload.name == name and isinstance(params.get(param), dict):
            for where, message in secrets.reference_problems(params[param], f"{t.at('params')}.{param}"):
                t.problems.add(where, message)
                ok = False
            params[param] = secrets.lift(params[param])
    return ok


def _param(table: Table, param: Param, value: Any) -> Any:
    key = param.name
    if param.kind == "int":
        if not is_int(value):
            return table.problem(key, f"expected an integer, got {describe(value)}")
    elif param.kind == "float":
        number = as_float(value)
        if number is None:
            return table.problem(key, f"expected a number, got {describe(value)}")
        value = number
    elif param.kind == "str":
        if not isinstance(value, str):
            return table.problem(key, f"expected a string, got {describe(value)}")
    elif param.kind == "bool":
        if not isinstance(value, bool):
            return table.problem(key, f"expected true or false, got {describe(value)}")
    elif param.kind == "list":
        if not isinstance(value, (list, tuple)):
            return table.problem(key, f"expected an array, got {describe(value)}")
        value = _plain(table, key, list(value))
    elif param.kind == "dict":
        if not isinstance(value, Mapping):
            return table.problem(key, f"expected a table, got {describe(value)}")
        value = _plain(table, key, dict(value))
    if value is BAD:
        return BAD
    if param.choices is not None and value not in param.choices:
        return table.problem(key, not_one_of(value, param.choices))
    return table.bounded(key, value, param.minimum, param.maximum)


def _plain(table: Table, key: str, value: Any) -> Any:
    """A deep copy of a list/dict param, or BAD if it holds anything JSON cannot carry."""

    def walk(v: Any, where: str, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise _NotPlain(where, "nested too deeply")
        if v is None or isinstance(v, (bool, str)) or is_int(v):
            return v
        if isinstance(v, float):
            if not math.isfinite(v):
                raise _NotPlain(where, f"{v} cannot be carried in JSON")
            return v
        if isinstance(v, (list, tuple)):
            return [walk(x, f"{where}[{i}]", depth + 1) for i, x in enumerate(v)]
        if isinstance(v, Mapping):
            out = {}
            for k, x in v.items():
                if not isinstance(k, str):
                    raise _NotPlain(where, f"key {k!r} is not a string")
                out[k] = walk(x, f"{where}.{k}", depth + 1)
            return out
        raise _NotPlain(where, f"{describe(v)} cannot be carried in JSON")

    try:
        return walk(value, table.at(key), 0)
    except _NotPlain as e:
        table.problems.add(e.where, e.message)
        return BAD


class _NotPlain(Exception):
    def __init__(self, where: str, message: str) -> None:
        super().__init__(message)
        self.where = where
        self.message = message


def _fits(t: Table, workload: Workload, kind: str, params: Any) -> bool:
    if kind in workload.servers:
        return True
    if "any" not in workload.servers:
        t.problem("workload", f"{workload.name!r} cannot drive server kind {kind!r} "
                              f"(it fits {', '.join(workload.servers)})")
        return False
    if workload.param("urls") is not None and isinstance(params, dict) and not params.get("urls"):
        native = [s for s in workload.servers if s != "any"]
        t.problem("params.urls", f"workload {workload.name!r} only targets server nodes of kind "
                                 f"{', '.join(native)}; against {kind!r} give the urls to request")
        return False
    return True


def _check_parallel(benchmarks: list[Benchmark], index: dict[str, int], problems: Problems) -> None:
    first: dict[str, Benchmark] = {}
    for b in benchmarks:
        if b.parallel is None:
            continue
        lead = first.setdefault(b.parallel, b)
        if b.repeat != lead.repeat:
            problems.add(f"benchmark[{index[b.name]}].repeat",
                         f"{b.repeat} differs from {lead.name!r} (repeat = {lead.repeat}); benchmarks sharing "
                         f"parallel = {b.parallel!r} repeat together")
