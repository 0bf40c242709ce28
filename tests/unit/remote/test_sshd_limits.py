"""sshd as shipped: MaxStartups 10:30:100 drops, at random, handshakes beyond 10 unauthenticated
ones to one sshd. Concurrent connects to one sshd (a host, or a bastion its hosts are reached
through) stay within MAX_HANDSHAKES, and a handshake dropped before the banner is tried again.
(Channels per connection, MaxSessions, are held under 10 by the transport: the bastion fleet
test checks both against a real sshd with stock limits.)"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import paramiko
import pytest

from fabfile.remote import pool, ssh
from fabfile.remote.ssh import SshSettings


class Gauge:
    def __init__(self) -> None:
        self.now = self.peak = 0
        self.lock = threading.Lock()

    def __enter__(self) -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.now -= 1


def _connection(host: str, gauges: dict[str, Gauge], fail_first: int = 0) -> SimpleNamespace:
    c = SimpleNamespace(host=host, port=22, gateway=object(), is_connected=False, connect_kwargs={}, opens=0)

    def open_() -> None:
        c.opens += 1
        with gauges.setdefault(host, Gauge()):
            time.sleep(0.02)
        if c.opens <= fail_first:  # what paramiko raises when sshd drops the connection
            try:
                raise EOFError()
            except EOFError as e:
                raise paramiko.SSHException("Error reading SSH protocol banner" + str(e)) from None
    c.open = open_
    return c


def test_handshakes_to_one_sshd_stay_within_the_limit_and_others_are_not_held_up() -> None:
    gauges: dict[str, Gauge] = {}
    # 32 workers: a fleet's pool. 24 connections to one bastion, 24 to distinct hosts.
    conns = [_connection("203.0.113.1", gauges) for _ in range(24)]
    conns += [_connection(f"10.0.0.{i}", gauges) for i in range(24)]
    pool.each(range(len(conns)), lambda i: ssh._open(conns[i], SshSettings()), workers=32)
    assert all(c.opens == 1 for c in conns)
    assert gauges["203.0.113.1"].peak == ssh.MAX_HANDSHAKES < 10
    assert max(g.peak for h, g in gauges.items() if h != "203.0.113.1") == 1


def test_a_handshake_dropped_before_the_banner_is_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ssh, "HANDSHAKE_RETRIES_S", (0.0, 0.0))
    gauges: dict[str, Gauge] = {}
    c = _connection("198.51.100.9", gauges, fail_first=2)
    ssh._open(c, SshSettings())
    assert c.opens == 3
    c = _connection("198.51.100.9", gauges, fail_first=3)
    with pytest.raises(paramiko.SSHException, match="Error reading SSH protocol banner"):
        ssh._open(c, SshSettings())
    assert c.opens == 3  # then it is the host's failure, named by open_checked


def test_other_failures_are_not_retried() -> None:
    c = _connection("198.51.100.10", {})

    def refused() -> None:
        c.opens += 1
        raise paramiko.SSHException("Error reading SSH protocol bannertimed out")  # a silent port: no retry
    c.open = refused
    with pytest.raises(paramiko.SSHException):
        ssh._open(c, SshSettings())
    assert c.opens == 1
