"""bench.agent.hostfacts: parsers against fixtures, then one real gathering on this machine."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path

import bench
from bench.agent import hostfacts as hf

PROC = Path(__file__).resolve().parents[2] / "data" / "proc"
REPO = Path(__file__).resolve().parents[3]


def fixture(name: str) -> str:
    return (PROC / name).read_text()


def test_cpu_model_fixture():
    assert hf.cpu_model(fixture("cpuinfo")) == "AMD EPYC"
    blocks = hf.parse_cpuinfo(fixture("cpuinfo"))
    assert len(blocks) == 2 and [b["processor"] for b in blocks] == ["0", "1"]


ARM64_CPUINFO = """\
processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x3
CPU part\t: 0xd0c
CPU revision\t: 1

processor\t: 1
CPU implementer\t: 0x41
CPU part\t: 0xd0c
"""


def test_cpu_model_arm64_without_a_name():
    assert hf.cpu_model(ARM64_CPUINFO) == "ARM implementer 0x41 part 0xd0c"


def test_cpu_model_power_and_unknown():
    power = "processor\t: 0\ncpu\t\t: POWER9 (raw), altivec supported\n"
    assert hf.cpu_model(power) == "POWER9 (raw), altivec supported"
    assert hf.cpu_model("processor : 0\n") is None


OS_RELEASE = """\
# comment
PRETTY_NAME="Ubuntu 22.04.4 LTS"
NAME='Ubuntu'
VERSION_ID=22.04
HOME_URL="https://www.ubuntu.com/"
ODD="unbalanced
ESCAPED="a \\"quoted\\" word"

"""


def test_parse_os_release():
    info = hf.parse_os_release(OS_RELEASE)
    assert info["PRETTY_NAME"] == "Ubuntu 22.04.4 LTS"
    assert info["NAME"] == "Ubuntu"
    assert info["VERSION_ID"] == "22.04"
    assert info["HOME_URL"] == "https://www.ubuntu.com/"
    assert info["ODD"] == "unbalanced"
    assert info["ESCAPED"] == 'a "quoted" word'


def test_parse_btime_fixture():
    line = next(ln for ln in fixture("stat.1").split("\n") if ln.startswith("btime "))
    assert hf.parse_btime(fixture("stat.1")) == int(line.split()[1])
    assert hf.parse_btime("cpu 1 2 3\n") is None


def test_pex_files(tmp_path):
    (tmp_path / "agent.pex").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    (tmp_path / "server.pex").write_bytes(b"x" * (3 << 20))
    (tmp_path / "notes.txt").write_text("not a pex")
    (tmp_path / "packed.pex").mkdir()
    listed = hf.pex_files(str(tmp_path))
    assert [p["name"] for p in listed] == ["agent.pex", "packed.pex", "server.pex"]
    agent, packed, server = listed
    assert agent["sha256"] == hashlib.sha256((tmp_path / "agent.pex").read_bytes()).hexdigest()
    assert agent["size_bytes"] == 22 and agent["path"] == str(tmp_path / "agent.pex")
    assert server["sha256"] == hashlib.sha256(b"x" * (3 << 20)).hexdigest()
    assert packed["sha256"] is None and packed["size_bytes"] is None


def test_gather_on_this_machine():
    facts = hf.gather()
    assert facts["schema"] == hf.FACTS_SCHEMA
    assert facts["hostname"] == socket.gethostname()
    assert facts["cpu_model"]
    assert facts["logical_cores"] == os.cpu_count() and 1 <= facts["usable_cores"] <= os.cpu_count()
    meminfo = Path("/proc/meminfo").read_text().split("\n")
    mem_total = int(next(ln for ln in meminfo if ln.startswith("MemTotal:")).split()[1])
    assert facts["memory_total_bytes"] == mem_total * 1024
    assert facts["kernel"] == platform.release()
    assert facts["machine"] == platform.machine()
    assert facts["libc"] == {"name": "glibc", "version": os.confstr("CS_GNU_LIBC_VERSION").split()[1]}
    assert facts["python"] == {
        "version": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
    }
    assert 0 < facts["boot_time"] <= facts["collected_at"]
    assert facts["fleetbench_version"] == bench.__version__
    assert facts["pex"] == []
    assert isinstance(facts["disks"], list)
    if Path("/etc/os-release").exists():
        assert facts["os"]
    json.dumps(facts)  # plain JSON all the way down


def test_main_prints_and_writes_one_line(tmp_path, capsys):
    (tmp_path / "pexes").mkdir()
    (tmp_path / "pexes" / "agent.pex").write_bytes(b"agent")
    out = tmp_path / "facts" / "facts.json"
    assert hf.main(["--out", str(out), "--pex-dir", str(tmp_path / "pexes")]) == 0
    printed = capsys.readouterr().out
    assert printed.count("\n") == 1
    assert out.read_text() == printed
    facts = json.loads(printed)
    assert facts["pex"] == [{"name": "agent.pex", "path": str(tmp_path / "pexes" / "agent.pex"),
                             "size_bytes": 5, "sha256": hashlib.sha256(b"agent").hexdigest()}]
    assert not [p for p in out.parent.iterdir() if p.name != "facts.json"]  # no temp file left


def test_main_rejects_a_missing_pex_dir(tmp_path):
    assert hf.main(["--pex-dir", str(tmp_path / "nope")]) == 2


def test_runs_as_a_module():
    done = subprocess.run(
        [sys.executable, "-m", "bench.agent.hostfacts"], cwd=str(REPO), capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    assert facts["hostname"] == socket.gethostname() and facts["machine"] == platform.machine()


def test_first_line_of_a_sysfs_file_or_none(tmp_path):
    assert hf._first_line(str(PROC / "current_clocksource")) == "tsc"
    (tmp_path / "empty").write_text("\n")
    assert hf._first_line(str(tmp_path / "empty")) is None
    assert hf._first_line(str(tmp_path / "missing")) is None
