"""The pure parts of ``testbed --nat``: public addresses, who the NAT translates, its nftables
text (checked by ``nft -c`` where nft is installed: the real parser, no root needed), and the
sshd limits."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from devtools.testbed import plan, sshd
from devtools.testbed.layout import SSHD_LIMITS, Layout
from devtools.testbed.system import TestbedError


def test_hosts_are_public_in_the_benchmarking_range_one_24_per_subnet():
    assert plan.public_address(7, 3) == "198.18.7.13"
    assert plan.public_network(255).subnet_of(plan.PUBLIC_RANGE)
    assert plan.nat_table("tb") == "fleetbench_nat_tb" != plan.nat_table("ft")


def test_behind_the_nat_the_controller_reaches_public_addresses_and_hosts_listen_on_private_ones(tmp_path):
    lay = Layout(tmp_path, prefix="tb", subnet=7, nat=True)
    hosts = plan.plan_hosts("tb", 7, 2)
    assert [(lay.reached_at(p), lay.ssh_address(p)) for p in hosts] == [
        ("198.18.7.11", "10.213.7.11"), ("198.18.7.12", "10.213.7.12")]
    assert lay.nat_pairs(hosts) == [("198.18.7.11", "10.213.7.11"), ("198.18.7.12", "10.213.7.12")]
    assert lay.topology() == {"user": None, "topology": "nat", "sshd_limits": None}


def test_with_a_bastion_only_the_bastion_is_public(tmp_path):
    lay = Layout(tmp_path, prefix="tb", subnet=7, nat=True, bastion=True)
    front, *hosts = [plan.bastion_plan("tb", 7), *plan.plan_hosts("tb", 7, 2)]
    assert lay.reached_at(front) == "198.18.7.10" and lay.ssh_address(front) == "10.213.7.2"  # its outer link
    assert [lay.reached_at(p) for p in hosts] == ["10.213.7.11", "10.213.7.12"]  # through the bastion
    assert lay.nat_pairs([front, *hosts]) == [("198.18.7.10", "10.213.7.2")]
    assert lay.uplink_device == "fbo-tb" and lay.topology()["topology"] == "bastion+nat"


def test_without_nat_nothing_changes(tmp_path):
    lay = Layout(tmp_path, prefix="tb", subnet=7)
    p = plan.plan_hosts("tb", 7, 1)[0]
    assert lay.reached_at(p) == lay.ssh_address(p) == "10.213.7.11" and lay.nat_pairs([p]) == []
    assert lay.topology() == {"user": None, "topology": "flat", "sshd_limits": None}  # as recorded before


RULESET = """\
table ip fleetbench_nat_tb {
  chain output {
    type nat hook output priority -100; policy accept;
    ip daddr 198.18.7.11 dnat to 10.213.7.11
    ip daddr 198.18.7.12 dnat to 10.213.7.12
  }
  chain controller {
    type filter hook output priority 0; policy accept;
    oifname "fbbr-tb" ip daddr 10.213.7.0/24 ct status dnat accept
    oifname "fbbr-tb" ip daddr 10.213.7.0/24 ct direction reply accept
    oifname "fbbr-tb" ip daddr 10.213.7.0/24 reject with icmp type admin-prohibited
  }
}
"""


def test_the_nat_rules_translate_only_what_the_controller_sends(tmp_path):
    lay = Layout(tmp_path, prefix="tb", subnet=7, nat=True)
    text = plan.nat_ruleset("tb", lay.nat_pairs(plan.plan_hosts("tb", 7, 2)), lay.uplink_device, lay.network)
    assert text == RULESET
    assert "prerouting" not in text  # nothing a host sends is translated
    if shutil.which("nft") and os.geteuid() == 0:  # the real parser (make system-deps installs nftables)
        checked = subprocess.run(["nft", "-c", "-f", "-"], input=text, capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr


def test_sshd_limits_stock_or_relaxed(tmp_path):
    argv = sshd.sshd_argv(sshd="/usr/sbin/sshd", mount="/m", address="10.0.0.1", limits=SSHD_LIMITS["stock"])
    assert "MaxStartups=10:30:100" in argv and "MaxSessions=10" in argv
    assert Layout(tmp_path, sshd_limits="stock").topology()["sshd_limits"] == "stock"
    with pytest.raises(TestbedError, match="bad sshd limits 'huge'"):
        Layout(tmp_path, sshd_limits="huge")
