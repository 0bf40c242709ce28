"""What the hosts observed during a run, as the controller fetches and keeps it.

Each host's run (bench.agent.hostrun) takes its ``facts`` once (cpu, memory, kernel, OS, python,
the sha256 of every pex in ~/.fleetbench/bin) and runs a ``metrics`` sampler for the whole run
(one JSON line per second, watching the pid in each of its server nodes' ``server.pid``), in
``~/.fleetbench/runs/<run-id>/_host/``. The follower (fabfile.runs.follow) appends the new
metrics lines to ``runs/<run-id>/hosts/<host>/metrics.ndjson`` as they come (up to
METRICS_KEEP_BYTES per host), and at the end keeps each server node's logs as
``hosts/<host>/logs/<port>-server.log.gz`` (the server's own log file) and ``<port>-start.log.gz``
(its stdout and stderr; all a ``command`` server may log): the whole logs since the node started,
up to their last LOG_KEEP_BYTES (a node serves every run of a deployment, and what it logged
before this run may explain this one), scrubbed of every secret the controller knows.

Downloads are compressed on the host (``gzip -c``; plain bytes if a host has no gzip) and
bounded both ways: a broken or hostile host cannot make the controller hold more.
``host_section`` turns what the run directory holds into run.json's ``hosts``; a host whose
files cannot be used is a warning naming it, never a failed collect.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Mapping
from typing import Any

from bench.report import hosts as host_metrics
from bench.report.document import HostEntry, RunDoc
from fabfile.remote.shell import cmd
from fabfile.remote.streams import gunzip
from fabfile.runs.store import RunDir
from fabfile.terminal import scrub

Echo = Callable[[str], None]

METRICS = "metrics.ndjson"
FACTS = "facts.json"
GZIP_MAGIC = b"\x1f\x8b"
# What a host may cost us (it may be broken or hostile): metrics per host in all (a 1 s sample
# is ~1.5 KB: 12 hours), per server log (its last bytes), per download.
METRICS_KEEP_BYTES = 64 << 20
LOG_KEEP_BYTES = 16 << 20
MAX_DOWNLOAD_BYTES = 32 << 20


def fetch_command(path: str, offset: int = 0, limit: int | None = None, last: int | None = None) -> str:
    """The bytes of ``path`` (relative to the login's home) from ``offset`` on (at most ``limit``
    of them), or its ``last`` bytes; gzip'd on the host when it has gzip; nothing at all when the
    file does not exist."""
    if last is not None:
        part = f'tail -c {int(last)} "$f"'
    else:
        part = f'tail -c +{int(offset) + 1} "$f"' + (f" | head -c {int(limit)}" if limit is not None else "")
    return (f'f="$HOME"/{cmd(path)}; [ -f "$f" ] || exit 0; '
            f"if command -v gzip >/dev/null 2>&1; then {part} | gzip -c; else {part}; fi")


def unpack(data: bytes, limit: int = MAX_DOWNLOAD_BYTES, what: str = "a download") -> bytes:
    """``data`` as it was on the host: inflated (never past ``limit``) when it came gzip'd."""
    return gunzip(data, limit, what) if data.startswith(GZIP_MAGIC) else data


def log_command(path: str) -> str:
    """A server log's end (where a failure is), or all of it when it is smaller than that."""
    return fetch_command(path, last=LOG_KEEP_BYTES)


def keep_log(run_dir: RunDir, host: str, name: str, data: bytes) -> None:
    """A fetched server log (``data`` as :func:`log_command` sent it), scrubbed, in ``hosts/<host>/logs/``."""
    plain = unpack(data, LOG_KEEP_BYTES, f"{host}: {name}")
    if plain:  # (an empty file still gives a gzip header)
        # A server that logs its own secret does not put it into runs/.
        kept = scrub(plain.decode(errors="surrogateescape")).encode(errors="surrogateescape")
        run_dir.write_host_log(host, name, gzip.compress(kept))


def host_section(run_dir: RunDir, run: RunDoc, warn: Echo = lambda _: None) -> dict[str, HostEntry]:
    """run.json's ``hosts`` from what the run directory holds (see bench.report.hosts.host_section).
    A host whose metrics cannot be read or summarised is said with ``warn`` and has none: the
    other hosts and the run are still collected."""
    roles = host_metrics.roles_of(run.get("spawn") or {})
    names = list(dict.fromkeys([*roles, *run_dir.observed_hosts()]))
    facts = {name: _facts(run_dir, name, warn) for name in names}
    windows = host_metrics.benchmark_windows(run.get("benchmarks", ()))
    metrics = {name: _metrics(run_dir, name, windows, warn) for name in names}
    if not any(facts.values()) and not any(metrics.values()):
        return {}  # a run benched before host metrics existed
    addresses = (run.get("deployment") or {}).get("addresses")
    return host_metrics.host_section(roles, facts, metrics, windows,
                                     addresses if isinstance(addresses, dict) else None)


def _facts(run_dir: RunDir, name: str, warn: Echo) -> dict[str, Any] | None:
    try:
        facts = run_dir.host_facts(name)
    except (ValueError, RecursionError) as exc:
        warn(f"warning: {name}: {FACTS} cannot be read ({type(exc).__name__}); no host facts")
        return None
    return facts if isinstance(facts, dict) else None


def _metrics(run_dir: RunDir, name: str, windows: Mapping[str, Any], warn: Echo) -> list[dict[str, Any]]:
    where = f"{run_dir.path}/hosts/{name}/{METRICS}"
    try:
        samples = host_metrics.parse_ndjson(run_dir.host_metrics_text(name), where)
        host_metrics.host_section({}, {}, {name: samples}, windows)  # what collect will do with them
    except Exception as exc:  # anything: the samples came from the host; pure code, so nothing else fails
        warn(f"warning: {name}: its host metrics cannot be used ({type(exc).__name__}: {str(exc)[:200]})")
        return []
    return samples
