"""Open a page in headless Chromium and report what a user would see: a tiny DevTools client.

Chromium runs with ``--remote-debugging-pipe``: DevTools protocol messages (JSON, NUL-ended)
go in on its fd 3 and come out on its fd 4; no port, no network, no download. :func:`open_page`
loads a file, waits for its load event, evaluates an expression in it, and returns that value
with every console error, uncaught exception and browser log error seen on the way.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
TIMEOUT_S = 90.0


class BrowserError(RuntimeError):
    pass


def chromium() -> str | None:
    return next((path for path in map(shutil.which, CHROMIUM) if path), None)


@dataclass
class Page:
    value: Any  # what the expression evaluated to
    errors: list[str] = field(default_factory=list)  # console errors, exceptions, log errors


class _Pipe:
    def __init__(self, write_fd: int, read_fd: int, proc: subprocess.Popen) -> None:
        self.write_fd, self.read_fd, self.proc = write_fd, read_fd, proc
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             deadline: float = 0.0) -> dict[str, Any]:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")
        while True:
            reply = self.read(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise BrowserError("chromium gave no answer in time" if left <= 0 else
                                   f"chromium exited with status {self.proc.returncode}")
            ready, _, _ = select.select([self.read_fd], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(self.read_fd, 1 << 20)
                if not chunk:
                    raise BrowserError("chromium closed the DevTools pipe")
                self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)

    def wait_for(self, method: str, session: str, deadline: float) -> None:
        while not any(e.get("method") == method and e.get("sessionId") == session for e in self.events):
            self.events.append(self.read(deadline))


def open_page(path: Path, expression: str, timeout_s: float = TIMEOUT_S) -> Page:
    exe = chromium()
    if exe is None:
        raise BrowserError("no chromium on PATH (apt-get install chromium)")
    deadline = time.monotonic() + timeout_s
    to_chrome_r, to_chrome_w = os.pipe()
    from_chrome_r, from_chrome_w = os.pipe()
    with tempfile.TemporaryDirectory(prefix="fleetbench-chromium-") as profile:
        argv = [exe, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-extensions", f"--user-data-dir={profile}", "about:blank"]

        def child_fds() -> None:  # DevTools reads fd 3, writes fd 4 (moved up first: they may be 3 or 4)
            read_end = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
            write_end = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        # 3 and 4 are kept open past preexec_fn (subprocess closes the others after it)
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                preexec_fn=child_fds, pass_fds=(3, 4, to_chrome_r, from_chrome_w))
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        pipe = _Pipe(to_chrome_w, from_chrome_r, proc)
        try:
            return _visit(pipe, path, expression, deadline)
        finally:
            try:
                pipe.send("Browser.close", deadline=time.monotonic() + 5)
            except (BrowserError, OSError):
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            os.close(to_chrome_w)
            os.close(from_chrome_r)


def _visit(pipe: _Pipe, path: Path, expression: str, deadline: float) -> Page:
    target = pipe.send("Target.createTarget", {"url": "about:blank"}, deadline=deadline)["targetId"]
    session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True}, deadline=deadline)["sessionId"]
    for domain in ("Runtime", "Log", "Page"):
        pipe.send(f"{domain}.enable", session=session, deadline=deadline)
    pipe.events.clear()  # what about:blank said is not the page's
    pipe.send("Page.navigate", {"url": path.resolve().as_uri()}, session=session, deadline=deadline)
    pipe.wait_for("Page.loadEventFired", session, deadline)
    result = pipe.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True},
                       session=session, deadline=deadline)
    if "exceptionDetails" in result:
        raise BrowserError(f"the check itself failed: {result['exceptionDetails']}")
    return Page(result.get("result", {}).get("value"), _errors(pipe.events, session))


def _errors(events: list[dict[str, Any]], session: str) -> list[str]:
    out = []
    for event in events:
        if event.get("sessionId") != session:
            continue
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            words = (str(a.get("value", a.get("description"))) for a in params.get("args", ()))
            out.append("console: " + " ".join(words))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            out.append("exception: " + str(details.get("exception", {}).get("description") or details.get("text")))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            out.append("log: " + str(params["entry"].get("text")))
    return out


# What the report page shows, per benchmark: its table rows and its spectrum's decoded width.
REPORT_SHOWS = """JSON.stringify({
  rows: [...document.querySelectorAll('tr[data-benchmark]')].map(r => r.dataset.benchmark),
  cards: [...document.querySelectorAll('section.benchmark')].map(s => s.dataset.benchmark),
  pictures: Object.fromEntries([...document.querySelectorAll('img[data-benchmark]')]
                               .map(i => [i.dataset.benchmark, i.complete ? i.naturalWidth : -1])),
  images: [...document.images].map(i => i.complete ? i.naturalWidth : -1),
})"""


def report_shows(path: Path) -> tuple[dict[str, Any], list[str]]:
    """(what the report at ``path`` shows, see REPORT_SHOWS; the errors seen loading it)."""
    page = open_page(path, REPORT_SHOWS)
    return json.loads(page.value), page.errors
