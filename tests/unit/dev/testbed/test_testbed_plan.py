"""The testbed's pure planning: names, addresses, MACs, uplink shaping."""

from __future__ import annotations

import pytest

from devtools.testbed import plan as tbm
from devtools.testbed.plan import network_for, parse_rate, plan_hosts, tbf_args, validate_prefix
from devtools.testbed.system import TestbedError

# ---- names and addresses ----------------------------------------------------------------------


def test_plan_hosts_names_and_addresses():
    plans = plan_hosts("tb", 0, 5)
    assert [p.name for p in plans] == ["tb1", "tb2", "tb3", "tb4", "tb5"]
    assert [p.address for p in plans] == [f"10.213.0.{10 + i}" for i in range(1, 6)]
    assert [p.netns for p in plans] == [f"fb-tb{i}" for i in range(1, 6)]
    assert [p.veth for p in plans] == [f"fbv-tb{i}" for i in range(1, 6)]
    assert plans[0].index == 1


def test_plan_hosts_subnet_and_limits():
    plans = plan_hosts("tt", 250, tbm.MAX_HOSTS)
    assert plans[-1].address == "10.213.250.254"
    addresses = {p.address for p in plans}
    assert len(addresses) == tbm.MAX_HOSTS
    assert "10.213.250.1" not in addresses  # the bridge's (controller's) address
    longest = plan_hosts("abcdefgh", 1, tbm.MAX_HOSTS)
    assert max(len(p.veth) for p in longest) <= 15
    assert len(tbm.bridge_name("abcdefgh")) <= 15
    with pytest.raises(TestbedError, match="host count"):
        plan_hosts("tb", 0, 0)
    with pytest.raises(TestbedError, match="host count"):
        plan_hosts("tb", 0, tbm.MAX_HOSTS + 1)


def test_32_hosts_plan():
    plans = plan_hosts("tb", 0, 32)
    assert plans[-1].name == "tb32" and plans[-1].address == "10.213.0.42"


@pytest.mark.parametrize("prefix", ["tb", "t", "fleet", "a1b", "abcdefgh"])
def test_good_prefixes(prefix):
    assert validate_prefix(prefix) == prefix


@pytest.mark.parametrize("prefix", ["", "tb1", "TB", "t-b", "1tb", "abcdefghi", "t_b", None])
def test_bad_prefixes(prefix):
    with pytest.raises(TestbedError, match="prefix"):
        validate_prefix(prefix)


def test_mac_for_is_fixed_per_address():
    assert tbm.mac_for("10.213.0.11") == "02:fb:0a:d5:00:0b"
    assert tbm.mac_for("10.213.250.1") == "02:fb:0a:d5:fa:01"
    macs = {tbm.mac_for(p.address) for p in plan_hosts("tb", 3, 40)} | {tbm.mac_for(tbm.bridge_address(3))}
    assert len(macs) == 41


def test_network_for():
    assert str(network_for(0)) == "10.213.0.0/24"
    assert str(network_for(250)) == "10.213.250.0/24"
    assert tbm.bridge_address(7) == "10.213.7.1"
    for bad in (-1, 256, "1", True):
        with pytest.raises(TestbedError, match="subnet"):
            network_for(bad)


# ---- uplink -----------------------------------------------------------------------------------


def test_parse_rate():
    assert parse_rate("20mbit") == 20_000_000
    assert parse_rate("1gbit") == 1_000_000_000
    assert parse_rate("500kbit") == 500_000
    assert parse_rate("10mbps") == 80_000_000  # tc: mbps = megabytes per second
    assert parse_rate("2.5Mbit") == 2_500_000
    for bad in ("fast", "", "20 furlongs", "-5mbit", "1bit"):
        with pytest.raises(TestbedError, match="rate"):
            parse_rate(bad)


def test_tbf_args():
    args = tbf_args("20mbit")
    assert args[:3] == ["tbf", "rate", "20000000bit"]
    burst = int(args[args.index("burst") + 1])
    assert burst >= 32 * 1024
    assert args[args.index("latency") + 1] == "50ms"
    assert int(tbf_args("10gbit")[4]) >= 10_000_000_000 // 8 // 100
