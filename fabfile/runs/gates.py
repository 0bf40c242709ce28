"""What `inv collect` adds for CI: expectation verdicts (exit 3 when one fails) and the exports
for the tools people already use (export/metrics.prom, export/junit.xml).

Pure decisions live in bench.report.expect, .openmetrics and .junit; this module only reads the
run store and says which exit status the run earns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from bench.report import expect, junit, openmetrics
from bench.report import hosts as host_metrics
from bench.report.document import RunDoc
from bench.spawn import expectations
from fabfile.runs.store import RunDir

#: `inv collect` / `inv spawn` / `inv compare --fail-on`: an expectation (or the regression gate)
#: failed. 1 stays "agents failed".
EXIT_EXPECTATIONS = 3


def wanted(benchmarks: Iterable[Any]) -> dict[str, tuple[expectations.Expectation, ...]]:
    """Each spawn-file benchmark's parsed ``expect`` (already checked by the spawn schema)."""
    return {b.name: expectations.parse_all(list(b.expect)) for b in benchmarks if getattr(b, "expect", ())}


def judge(run: RunDoc, benchmarks: Iterable[Any], echo: Callable[[str], None]) -> list[expect.Verdict]:
    """Check ``run`` against its benchmarks' expectations, keep the verdicts in it, print them."""
    verdicts = expect.apply(run, wanted(benchmarks))
    if verdicts:
        failed = sum(1 for v in verdicts if not v.passed)
        echo("\nexpectations:\n" + expect.render(run)
             + (f"\n{failed} of {len(verdicts)} expectation(s) failed" if failed else ""))
    return verdicts


def exports(run: RunDoc, run_dir: RunDir, echo: Callable[[str], None]) -> dict[str, str]:
    """export/metrics.prom and export/junit.xml of a merged run."""
    samples: dict[str, list[dict[str, Any]]] = {}
    for host in run_dir.observed_hosts():
        try:
            samples[host] = host_metrics.parse_ndjson(run_dir.host_metrics_text(host),
                                                      str(run_dir.host_metrics_path(host)))
        except host_metrics.MetricsError as exc:  # the benchmark series are still worth having
            echo(f"warning: metrics.prom without {host}'s host metrics: {exc}")
    return {"metrics.prom": openmetrics.render(run, samples), "junit.xml": junit.render(run)}


def exit_code(run: RunDoc, allow_partial: bool) -> int:
    """0, 1 (agents failed, unless allowed) or EXIT_EXPECTATIONS (an expectation failed)."""
    if run.get("status") != "ok" and not allow_partial:
        return 1
    return EXIT_EXPECTATIONS if expect.failed(run) else 0
