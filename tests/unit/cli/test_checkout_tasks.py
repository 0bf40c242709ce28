"""``inv`` in the checkout: the installed tasks plus the developer tools of devtools/ (testbed,
demo, perf), wired as before the move; the testbed itself is replaced by a recorder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

import devtools.testbed
from tests.unit.cli.harness import Stages, fleetbench, inv


@dataclass
class Host:
    name: str
    address: str
    python: str | None = "/usr/bin/python3"
    image: str | None = None


class FakeTestbed:
    made: list[FakeTestbed] = []

    def __init__(self, state_dir: Path, **topology):
        self.state_dir, self.topology, self.calls = state_dir, topology, []
        FakeTestbed.made.append(self)

    def up(self, hosts: int, pythons, uplink, images) -> list[Host]:
        self.calls.append(("up", hosts, dict(pythons)))
        return [Host(f"tb{i}", f"10.213.0.{10 + i}") for i in range(1, hosts + 1)]

    def status(self) -> list[dict]:
        self.calls.append(("status",))
        return []

    def down(self) -> None:
        self.calls.append(("down",))


@pytest.fixture
def testbed(monkeypatch) -> type[FakeTestbed]:
    FakeTestbed.made = []
    monkeypatch.setattr(devtools.testbed, "Testbed", FakeTestbed)
    return FakeTestbed


def test_demo_brings_the_testbed_up_spawns_the_default_and_takes_it_down(fake: Stages, testbed, capsys) -> None:
    code, out, err = inv(capsys, "demo", "--hosts", "5")
    assert code == 0, err
    assert [call[0] for tb in testbed.made for call in tb.calls] == ["up", "down"]
    assert all(tb.state_dir == Path.cwd() / ".testbed" for tb in testbed.made)
    assert fake.names() == ["deploy", "bench", "fetch", "collect", "down"]
    assert fake.of("deploy")["spawn"] == "spawn.toml"
    assert "tb5    10.213.0.15     python /usr/bin/python3" in out
    assert f"ssh -F {Path.cwd() / '.testbed' / 'ssh_config'} tb1" in out


def test_testbed_tasks_keep_their_names_and_options(fake: Stages, testbed, capsys) -> None:
    code, out, err = inv(capsys, "testbed.up", "--hosts", "2", "--python", "tb2=/opt/python3.9", "--user", "bench")
    assert code == 0, err
    (made,) = testbed.made
    assert made.topology["user"] == "bench"
    assert made.calls == [("up", 2, {"tb2": "/opt/python3.9"})]
    assert inv(capsys, "testbed.status")[1].strip() == "no testbed is up"
    assert inv(capsys, "testbed.down")[1].strip() == "testbed down"
    assert fake.calls == []


def test_the_installed_command_has_no_testbed_even_where_the_checkout_does(fake: Stages, testbed, capsys) -> None:
    code, _, err = fleetbench(capsys, "testbed.status")
    assert code == 1 and "inv testbed.status" in err
    assert testbed.made == []
