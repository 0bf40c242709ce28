"""Connections made from the user's ssh_config: every ProxyJump hop checks host keys like the
host itself, and ForwardAgent is never honoured. (Through a real bastion: tests/fleet.)"""

from __future__ import annotations

from pathlib import Path

import paramiko

from fabfile.remote import ssh
from fabfile.remote.ssh import SshSettings

KEY = paramiko.ECDSAKey.generate()


def _settings(tmp_path: Path, config: str, **kw) -> SshSettings:
    (tmp_path / "kh").write_text(f"bastion.example {KEY.get_name()} {KEY.get_base64()}\n")
    (tmp_path / "ssh_config").write_text(config.replace("KH", str(tmp_path / "kh")))
    return SshSettings((tmp_path / "ssh_config",), connect_timeout=4, **kw)


def test_every_jump_host_gets_the_hosts_key_policy(tmp_path):
    settings = _settings(tmp_path, "Host web\n    HostName 10.0.0.5\n    ProxyJump jump2\n    UserKnownHostsFile KH\n"
                                   "Host jump2\n    HostName 10.0.0.2\n    ProxyJump bastion.example\n"
                                   "Host *\n    UserKnownHostsFile KH\n")
    c = ssh.connection("web", settings)
    hops = []
    hop = c.gateway
    while isinstance(hop, ssh.Connection):
        hops.append(hop)
        hop = hop.gateway
    assert [h.original_host for h in hops] == ["jump2", "bastion.example"]
    for h in [c, *hops]:
        assert isinstance(h.client._policy, paramiko.RejectPolicy), h  # Fabric's default: AutoAddPolicy
        assert h.connect_timeout == 4
    assert hops[1].client.get_host_keys().lookup("bastion.example")[KEY.get_name()] == KEY
    accept = ssh.connection("web", _settings(tmp_path, "Host web\n    ProxyJump bastion.example\n",
                                             accept_new_host_keys=True))
    assert type(accept.gateway.client._policy).__name__ == "_AcceptNew"  # what the user asked for, every hop


def test_forward_agent_in_ssh_config_is_ignored(tmp_path):
    settings = _settings(tmp_path, "Host *\n    ForwardAgent yes\n    ProxyJump bastion.example\n")
    c = ssh.connection("web", settings)
    assert c.forward_agent is False and c.gateway.forward_agent is False
    plain = ssh.Connection("web", config=ssh.Config(ssh_config=ssh.load_ssh_config(settings.config_files)))
    assert plain.forward_agent is True  # what Fabric alone would do
    ssh.secure(plain, settings)  # a fab-made Connection (fab -H) is secured the same way
    assert plain.forward_agent is False
