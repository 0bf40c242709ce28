"""Relay fan-out: each file crosses the controller's uplink once, and hosts pass it on.

A direct push sends the bytes once per host, so deploy time grows with the fleet and the
slowest uplink decides (a laptop on café wifi pushing to 16 hosts sends 16 copies). Here the
controller streams the file once, over SSH, into the first host of a chain; every host
writes what arrives to a temporary file *and* forwards it to the next host while it is
still arriving, so the whole chain finishes about when the first host does. Each hop is a
small stdlib-only Python program (``bench/agent/hop.py``) run with the host's python3.

How hosts reach each other, and why that way (see also hop.py's docstring):

* Hosts get **no SSH credentials**. Agent forwarding would let any host use the user's keys
  for as long as the session lasts; an ephemeral key pair would mean editing every host's
  ``authorized_keys`` (their auth config) and shipping a private key to each host.
* Instead each hop opens a plain TCP listener for the one transfer: random port, bound to
  the host's fleet address where possible, accepting only the upstream that presents a
  32-byte token the controller handed both ends over their SSH channels (stdin, never a
  command line), closed as soon as that upstream is in, abandoned after ``link_timeout``.
* Integrity rests on sha256, not on the network: the expected digest comes over SSH and
  every hop installs its copy (0700, atomic rename) only if its own hash of the bytes
  matches. A corrupted hop is caught there and redone (from a host that verified, so the
  uplink is not crossed again); what still fails is pushed directly.
* Where hosts cannot reach each other (firewalls, NAT, no route), linking fails before any
  data moves and the controller says so and pushes directly to every host.

The hop processes run concurrently on the hosts; the controller itself needs no thread per
host (it reads each hop's JSON lines in turn), only the SSH transports it already has.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import bench.agent
from fabfile.remote import pool
from fabfile.remote.host import Host
from fabfile.remote.shell import cmd, tail
from fabfile.ship.push import CHUNK, PART, Progress, push, remote_digests

if TYPE_CHECKING:
    from fabfile.remote.fleet import Fleet

# Run on the hosts by their own python3, so it lives with what else runs there (bench.agent).
HOP_SOURCE = (Path(bench.agent.__file__).parent / "hop.py").read_text()
HOP_COMMAND = cmd("python3", "-c", HOP_SOURCE)

#: Below this many hosts a relay saves nothing worth its setup: push directly.
RELAY_MIN_HOSTS = 3
#: Relay attempts (the first from the controller, then redos from verified hosts) before
#: the hosts still without a verified copy get direct pushes.
ATTEMPTS = 2

Echo = Callable[[str], None]


class HopFailed(Exception):
    """A hop did not answer as the protocol says; names the host."""


class Payload(Protocol):
    """What is relayed: build.Artifact fits."""

    @property
    def name(self) -> str: ...

    @property
    def path(self) -> Path: ...

    @property
    def sha256(self) -> str: ...

    @property
    def remote_path(self) -> str: ...


@dataclass(frozen=True)
class File:
    """A plain file to relay (a build.Artifact is the other kind of Payload)."""

    name: str
    path: Path
    sha256: str
    remote_path: str


class Hop(Protocol):
    """One running hop.py, seen from the controller."""

    name: str

    def send(self, data: bytes) -> None: ...

    def close_stdin(self) -> None: ...

    def message(self, timeout: float) -> dict: ...

    def close(self) -> None: ...


class HostHop:
    """hop.py started on a host (``Host.start``: over SSH, a raw channel of its open connection)."""

    def __init__(self, h: Host):
        self.name = h.name
        self.process = h.start(HOP_COMMAND)

    def send(self, data: bytes) -> None:
        self.process.send(data)

    def close_stdin(self) -> None:
        self.process.close_stdin()

    def message(self, timeout: float) -> dict:
        line = self.process.read_line(timeout)
        if line is None:
            if self.process.ended:
                raise HopFailed(f"{self.name}: the relay hop exited{self._why()}")
            raise HopFailed(f"{self.name}: the relay hop did not answer within {timeout:.0f}s")
        try:
            return json.loads(line)
        except ValueError:
            raise HopFailed(f"{self.name}: the relay hop said {line[:200]!r}") from None

    def _why(self) -> str:
        err = self.process.stderr()
        status = self.process.exit_status(wait=False)
        text = tail(err.decode(errors="replace"), 5)
        return (f" (exit {status})" if status is not None else "") + (f":\n{text}" if text else "")

    def close(self) -> None:
        self.process.close()


@dataclass
class ChainOutcome:
    ok: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # host -> why its copy is not there
    link_error: str | None = None  # the chain could not be set up (nothing was sent): why


Dial = Callable[[str, int], tuple[str, int]]


class Relay:
    """Sends one payload to many hosts through a chain of hops.

    ``open_hop(host)`` starts a hop on a host; ``address(host)`` is where other hosts reach
    it; ``dial`` maps a hop's (address, port) to what its upstream connects to (identity,
    except in tests that put a corrupting proxy on one link).
    """

    def __init__(self, open_hop: Callable[[str], Hop], address: Callable[[str], str], *,
                 echo: Echo = print, progress: Progress | None = None, dial: Dial | None = None,
                 io_timeout: float = 60.0, link_timeout: float = 15.0, workers: int = pool.MAX_WORKERS):
        self.open_hop = open_hop
        self.address = address
        self.echo = echo
        self.progress = progress
        self.dial: Dial = dial or (lambda address, port: (address, port))
        self.io_timeout = io_timeout
        self.link_timeout = link_timeout
        self.workers = workers

    def send(self, payload: Payload, hosts: Sequence[str],
             direct: Callable[[list[str]], object]) -> dict[str, str]:
        """Put ``payload`` on every host; ``direct(hosts)`` pushes to hosts the relay could not
        serve. Returns how each host got it: "relay", "relay from HOST" or "direct"."""
        how: dict[str, str] = {}
        pending = list(dict.fromkeys(hosts))
        source: str | None = None
        for attempt in range(1, ATTEMPTS + 1):
            outcome = self.chain(payload, source, pending)
            if outcome.link_error:
                self.echo(f"relay: {outcome.link_error}; pushing {payload.name} directly to {len(pending)} "
                          "host(s), one copy each over the controller's uplink")
                break
            for host in outcome.ok:
                how[host] = "relay" if source is None else f"relay from {source}"
            failed = [h for h in pending if h in outcome.failed]
            if not failed:
                return how
            problems = "; ".join(f"{h}: {outcome.failed[h]}" for h in failed)
            next_source = redo_source([source, *pending], failed, list(how))
            if attempt < ATTEMPTS:
                self.echo(f"relay: {len(failed)} host(s) have no verified copy ({problems}); "
                          f"redoing from {next_source or 'the controller'}")
            else:
                self.echo(f"relay: {len(failed)} host(s) still have no verified copy ({problems}); pushing directly")
            pending, source = failed, next_source
        direct(pending)
        how.update({h: "direct" for h in pending})
        return how

    # -- one chain ----------------------------------------------------------------------------

    def chain(self, payload: Payload, source: str | None, targets: Sequence[str]) -> ChainOutcome:
        """One pass: ``source`` (a host with a verified copy, or None for the controller) feeds
        a chain through ``targets`` in order."""
        outcome = ChainOutcome()
        names = ([source] if source else []) + list(targets)
        hops, open_errors = self._open(names)
        if source and source not in hops:  # the redo source is gone: everyone failed this pass
            outcome.failed = {t: f"relay source {source}: {open_errors[source]}" for t in targets}
            self._close(hops.values())
            return outcome
        outcome.failed.update({n: e for n, e in open_errors.items() if n != source})
        order = [n for n in names if n in hops]
        try:
            if not [n for n in order if n != source]:
                return outcome
            size = payload.path.stat().st_size
            link_error = self._link(payload, source, order, hops, size)
            if link_error:
                outcome.link_error = link_error
                return outcome
            if source is None:
                self._feed(hops[order[0]], payload.path, size, len(order))
            for name in order:
                try:
                    answer = hops[name].message(self.io_timeout + size / 1e6 + 30)
                except HopFailed as exc:
                    answer = {"ok": False, "error": str(exc)}
                if name == source:
                    continue  # its own copy was verified before; its failures show downstream
                if answer.get("ok"):
                    outcome.ok.append(name)
                else:
                    outcome.failed[name] = str(answer.get("error") or "failed")
        finally:
            self._close(hops.values())
        return outcome

    def _open(self, names: Sequence[str]) -> tuple[dict[str, Hop], dict[str, str]]:
        try:
            return pool.each(names, self.open_hop, workers=self.workers), {}
        except pool.PartialFailure as exc:
            return dict(exc.results), {n: str(e) for n, e in exc.failures.items()}

    def _link(self, payload: Payload, source: str | None, order: Sequence[str], hops: Mapping[str, Hop],
              size: int) -> str | None:
        """Start every hop and connect each to the next; the first link that failed, or None."""
        tokens = {name: secrets.token_hex(32) for name in order}
        tmp = f"{payload.remote_path}{PART}{secrets.token_hex(4)}"
        for i, name in enumerate(order):
            kind = "file" if name == source else ("stdin" if i == 0 else "peer")
            hops[name].send(_line({"source": kind, "path": payload.remote_path, "tmp": tmp, "size": size,
                                   "leftovers": f"{payload.remote_path}{PART}",
                                   "sha256": payload.sha256, "token": tokens[name], "bind": self.address(name),
                                   "timeout": self.io_timeout, "link_timeout": self.link_timeout}))
        ports: dict[str, int | None] = {}
        for name in order:
            try:
                answer = self._expect(hops[name], "ready", self.io_timeout)
            except HopFailed as exc:
                answer = {"error": str(exc)}
            if not answer.get("ready"):
                return f"the relay could not start on {name} ({answer.get('error')})"
            ports[name] = answer.get("port")
        for i, name in enumerate(order):
            nxt = order[i + 1] if i + 1 < len(order) else None
            hops[name].send(_line({"next": [*self.dial(self.address(nxt), int(ports[nxt] or 0)), tokens[nxt]]
                                   if nxt else None}))
        # Each hop reports its own links (it accepts its upstream while it connects downstream),
        # so the first failure in chain order is the broken link itself; stop there: closing
        # the hops calls the transfer off everywhere.
        for i, name in enumerate(order):
            try:
                answer = self._expect(hops[name], "linked", self.link_timeout + 5)
            except HopFailed as exc:
                answer = {"error": str(exc)}
            if not answer.get("linked"):
                nxt = order[i + 1] if i + 1 < len(order) else None
                where = f"{name} -> {nxt}" if nxt else name
                return f"hosts cannot reach each other ({where}: {answer.get('error')})"
        return None

    def _expect(self, hop: Hop, key: str, timeout: float) -> dict:
        answer = hop.message(timeout)
        if key not in answer:
            if "error" in answer:
                return answer
            raise HopFailed(f"{hop.name}: the relay hop said {answer!r}, expected {key!r}")
        return answer

    def _feed(self, head: Hop, path: Path, size: int, count: int) -> None:
        """The one copy over the uplink: the file into the head hop's stdin."""
        where = f"{head.name} (+{count - 1} by relay)" if count > 1 else head.name
        sent = 0
        try:
            with open(path, "rb") as fh:
                while sent < size:
                    block = fh.read(min(CHUNK, size - sent))
                    if not block:
                        break
                    head.send(block)
                    sent += len(block)
                    if self.progress:
                        self.progress(where, sent, size)
        except (OSError, EOFError) as exc:  # the head died: every hop reports a short transfer
            self.echo(f"relay: sending to {head.name} failed after {sent} bytes: {exc}")
        finally:
            try:
                head.close_stdin()
            except (OSError, EOFError):
                pass

    @staticmethod
    def _close(hops: Iterable[Hop]) -> None:
        for hop in hops:
            try:
                hop.close()
            except Exception:  # closing a broken channel must not hide the real outcome
                pass


def redo_source(chain: Sequence[str | None], failed: Sequence[str], verified: Sequence[str]) -> str | None:
    """A host with a verified copy to redo ``failed`` from, sparing the uplink; None if none.

    Prefers a host other than the upstream of the first failure: if that host's sending was
    the fault, redoing from it would fail the same way.
    """
    if not verified:
        return None
    first = chain.index(failed[0]) if failed[0] in chain else 0
    suspect = chain[first - 1] if first > 0 else None
    for host in verified:
        if host != suspect:
            return host
    return verified[0]


def _line(obj: object) -> bytes:
    return (json.dumps(obj) + "\n").encode()


# -- what stages.deploy.push uses ------------------------------------------------------------


def deliver(fleet: Fleet, wanted: Mapping[str, Sequence[Payload]], *, relay: bool = True,
            echo: Echo = print, progress: Progress | None = None) -> tuple[int, int]:
    """Every host gets its payloads: one presence check per host, then per payload a relay
    (``relay`` and >= RELAY_MIN_HOSTS hosts lack it) or direct pushes. Returns (sent, kept)."""
    hosts = list(wanted)
    have = fleet.each(lambda h: remote_digests(fleet[h], [p.remote_path for p in wanted[h]]), hosts,
                      what="check files")
    payloads: dict[tuple[str, str], Payload] = {}
    for h in hosts:
        for p in wanted[h]:
            payloads.setdefault((p.remote_path, p.sha256), p)
    sent = kept = 0
    for (remote, sha), payload in payloads.items():
        targets = [h for h in hosts if any(p.remote_path == remote for p in wanted[h])]
        need = [h for h in targets if have[h].get(remote) != sha]
        kept += len(targets) - len(need)
        sent += len(need)

        def direct(names: list[str], payload: Payload = payload) -> None:
            fleet.each(lambda host: push(fleet[host], payload.path, payload.remote_path, payload.sha256, progress),
                       names, what=f"push {payload.name}")

        if not need:
            continue
        if relay and len(need) >= RELAY_MIN_HOSTS:
            started = time.monotonic()
            how = Relay(lambda h: HostHop(fleet[h]), fleet.address, echo=echo, progress=progress).send(
                payload, need, direct)
            relayed = sum(1 for v in how.values() if v.startswith("relay"))
            echo(f"  {payload.name}: {relayed} of {len(need)} host(s) by relay in {time.monotonic() - started:.1f}s")
        else:
            direct(need)
    return sent, kept
