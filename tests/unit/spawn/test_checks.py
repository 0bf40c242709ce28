"""bench.spawn.checks: the validation framework (key paths, did-you-mean, typed values, SpecError)."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from bench.spawn.checks import BAD, MISSING, Problems, SpecError, Table, describe, duration_seconds, key_text


def test_spec_error_pickles() -> None:
    error = SpecError(["a: b", "c: d"], source="f.toml")
    again = pickle.loads(pickle.dumps(error))
    assert (again.problems, again.source, str(again)) == (["a: b", "c: d"], "f.toml", "a: b\nc: d")


def test_unknown_keys_are_reported_up_front_with_a_suggestion() -> None:
    problems = Problems()
    table = Table({"prot": 1, "zzz": 2}, "server", ("port", "kind"), problems)
    assert problems.items == ["server.prot: unknown key; did you mean 'port'?",
                              "server.zzz: unknown key (expected one of: port, kind)"]
    assert table.missing("port", "missing") is BAD  # the misspelling already said it
    assert table.missing("kind", "missing") is BAD
    assert problems.items[2:] == ["server.kind: missing"]


def test_values_come_back_checked_defaulted_or_bad() -> None:
    problems = Problems()
    table = Table({"n": 5, "t": True, "d": "2m", "s": " "}, "b[0]", ("n", "t", "d", "s", "absent"), problems)
    assert table.integer("n", minimum=1, maximum=9) == 5
    assert table.integer("absent", 7) == 7
    assert table.integer("absent") is MISSING
    assert table.integer("t") is BAD
    assert table.integer("n", maximum=4) is BAD
    assert table.duration("d") == 120.0
    assert table.text("s") is BAD
    assert problems.items == ["b[0].t: expected an integer, got true", "b[0].n: must be <= 4, got 5",
                              "b[0].s: must not be empty"]


@pytest.mark.parametrize("key, shown", [("port", "port"), ("a.b", '"a.b"'), ("x\ny", '"x\\ny"'), (3, "3")])
def test_key_text_quotes_what_toml_would(key: Any, shown: str) -> None:
    assert key_text(key) == shown


@pytest.mark.parametrize("value, seconds", [("500ms", 0.5), ("1h", 3600.0), (2, 2.0), ("2 days", None),
                                            (True, None), (float("inf"), None), ("1e400s", None)])
def test_duration_seconds(value: Any, seconds: float | None) -> None:
    assert duration_seconds(value) == seconds


@pytest.mark.parametrize("value, text", [(None, "null"), (False, "false"), ({}, "a table"), ([], "an array"),
                                         (2**70, "a huge integer"), ("x" * 80, repr("x" * 57) + "..."),
                                         (object(), "a object")])
def test_describe_names_values_in_the_files_terms(value: Any, text: str) -> None:
    assert describe(value) == text
