"""The browser check itself: real headless Chromium sees a good page as good and a bad one as bad.

Without chromium this skips on a developer's machine; under CI (CI=true) it fails instead, as
the Makefile installs chromium for the tests.
"""

from __future__ import annotations

import os
import struct
import sys
import zlib
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import browser  # noqa: E402

from bench.report import html  # noqa: E402

if browser.chromium() is None:
    if os.environ.get("CI"):
        raise RuntimeError("chromium is missing: `make system-deps` as root installs it")
    pytest.skip("no chromium (make system-deps installs it as root)", allow_module_level=True)


def png(width: int = 3, height: int = 2) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\0" + b"\xff\x00\x00" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


RUN = {"run_id": "r1", "name": "demo", "status": "ok", "benchmarks": [
    {"name": n, "workload": "set", "agents": 1, "agents_ok": 1, "ops": 10, "errors": 0, "ops_per_s": 5.0,
     "seconds": 2.0, "latency_us": {"count": 10, "p50": 100, "p90": 100, "p99": 100, "p99.9": 100, "max": 100},
     "failures": [], "agent_results": []} for n in ("set", "get")]}


def test_a_good_report_shows_every_benchmark_and_no_error(tmp_path):
    path = tmp_path / "report.html"
    path.write_text(html.page(RUN, {"spectrum-set.png": png(), "spectrum-get.png": png(5, 4)}))
    shows, errors = browser.report_shows(path)
    assert errors == []
    assert shows["cards"] == ["set", "get"] and {"set", "get"} <= set(shows["rows"])
    assert shows["pictures"] == {"set": 3, "get": 5}


def test_a_broken_picture_and_a_script_error_are_caught(tmp_path):
    path = tmp_path / "report.html"
    page = html.page(RUN, {"spectrum-set.png": b"not a png", "spectrum-get.png": png()})
    path.write_text(page.replace("</body>", "<script>undefinedFunction()</script></body>"))
    shows, errors = browser.report_shows(path)
    assert shows["pictures"]["set"] == 0 and shows["pictures"]["get"] == 3
    assert any("picture failed to load: latency spectrum of set" in e for e in errors), errors
    assert any("undefinedFunction" in e for e in errors), errors
