"""Testbed.up and down refuse what they cannot do before touching anything (no root needed)."""

from __future__ import annotations

import os

import pytest

from devtools.testbed import Testbed, TestbedError

# ---- up's argument checks (before anything is touched) ----------------------------------------


def test_not_root_says_why(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    tb = Testbed(tmp_path / ".testbed", prefix="tu", subnet=252)
    for call in (lambda: tb.up(2), tb.down):
        with pytest.raises(TestbedError) as e:
            call()
        assert "needs root" in str(e.value) and "namespaces" in str(e.value)
    assert not (tmp_path / ".testbed").exists()


def test_missing_sshd_says_apt_get(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    tb = Testbed(tmp_path / ".testbed", prefix="tu", subnet=252, sshd=str(tmp_path / "no-sshd"))
    with pytest.raises(TestbedError, match="apt-get install openssh-server"):
        tb.up(2)


def test_override_for_unknown_host_or_bad_path(monkeypatch, tmp_path):
    monkeypatch.setattr(Testbed, "_preflight", lambda self, **kw: None)
    monkeypatch.setattr(Testbed, "_lock", lambda self: pytest.fail("must fail before touching anything"))
    tb = Testbed(tmp_path / ".testbed", prefix="tu", subnet=252)
    with pytest.raises(TestbedError, match="'tu7': no such host .*tu1..tu3"):
        tb.up(3, {"tu7": "/usr/bin/python3"})
    with pytest.raises(TestbedError, match="tu2: /nonexistent/python3.9 does not exist"):
        tb.up(3, {"tu2": "/nonexistent/python3.9"})
    with pytest.raises(TestbedError, match="uplink rate 'quick'"):
        tb.up(3, {}, uplink="quick")
