"""bench.agent.hostmetrics: the /proc parsers against fixture copies, then real sampling here."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.agent import hostmetrics as hm
from bench.agent import procfs

PROC = Path(__file__).resolve().parents[2] / "data" / "proc"
REPO = Path(__file__).resolve().parents[3]


def fixture(name: str) -> str:
    return (PROC / name).read_text()


def first_fields(text: str, prefix: str):
    line = next(ln for ln in text.split("\n") if ln.startswith(prefix))
    return [int(v) for v in line.split()[1:] if v != "kB"]


# ----- /proc/stat and cpu percentages -----


def test_parse_proc_stat_fixture():
    stat = procfs.parse_proc_stat(fixture("stat.1"))
    assert stat.cores == 2
    assert stat.cpu == tuple(first_fields(fixture("stat.1"), "cpu ")[:8])


def test_cpu_percentages_fixture_deltas():
    prev, cur = procfs.parse_proc_stat(fixture("stat.1")), procfs.parse_proc_stat(fixture("stat.2"))
    pct = procfs.cpu_percentages(prev, cur)
    assert list(pct) == ["user", "system", "iowait", "steal", "idle"]
    assert all(0 <= v <= 100 for v in pct.values())
    assert sum(pct.values()) == pytest.approx(100, abs=0.05)
    d = [c - p for p, c in zip(prev.cpu, cur.cpu, strict=False)]
    total = sum(d)
    assert pct["user"] == round(100 * (d[0] + d[1]) / total, 2)
    assert pct["system"] == round(100 * (d[2] + d[5] + d[6]) / total, 2)
    assert pct["idle"] == round(100 * d[3] / total, 2)


def test_cpu_percentages_folds_nice_irq_softirq_and_ignores_guest():
    prev = procfs.parse_proc_stat("cpu  0 0 0 0 0 0 0 0 0 0\ncpu0 0 0 0 0 0 0 0 0 0 0\n")
    #                       user nice system idle iowait irq softirq steal guest guest_nice
    cur = procfs.parse_proc_stat("cpu  10 10 10 40 10 5 5 10 7 3\ncpu0 0 0 0 0 0 0 0 0 0 0\n")
    assert procfs.cpu_percentages(prev, cur) == {"user": 20.0, "system": 20.0, "iowait": 10.0, "steal": 10.0,
                                                 "idle": 40.0}


def test_cpu_percentages_clamps_backwards_counters_and_no_tick_is_none():
    prev = procfs.ProcStat((100, 0, 100, 100, 50, 0, 0, 0), 1)
    cur = procfs.ProcStat((150, 0, 100, 150, 40, 0, 0, 0), 1)  # iowait stepped back by 10
    assert procfs.cpu_percentages(prev, cur) == {"user": 50.0, "system": 0.0, "iowait": 0.0, "steal": 0.0, "idle": 50.0}
    assert procfs.cpu_percentages(prev, prev) is None


def test_parse_proc_stat_old_kernel_without_steal():
    stat = procfs.parse_proc_stat("cpu  1 2 3 4 5 6 7\ncpu0 1 2 3 4 5 6 7\ncpu1 0 0 0 0 0 0 0\nintr 1 2\n")
    assert stat == procfs.ProcStat((1, 2, 3, 4, 5, 6, 7, 0), 2)


def test_parse_proc_stat_rejects_garbage():
    with pytest.raises(ValueError):
        procfs.parse_proc_stat("intr 1 2 3\n")


# ----- meminfo, loadavg -----


def test_parse_meminfo_and_memory_fixture():
    text = fixture("meminfo")
    info = procfs.parse_meminfo(text)
    assert info["MemTotal"] == first_fields(text, "MemTotal:")[0] * 1024
    mem = procfs.memory(info)
    assert mem["total_bytes"] == info["MemTotal"]
    assert mem["available_bytes"] == info["MemAvailable"]
    assert mem["used_bytes"] == info["MemTotal"] - info["MemAvailable"]
    assert "HugePages_Total" in info and info["HugePages_Total"] == first_fields(text, "HugePages_Total:")[0]


def test_memory_without_memavailable_uses_free_buffers_cached():
    info = procfs.parse_meminfo("MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 20 kB\nCached: 300 kB\n")
    assert procfs.memory(info) == {"used_bytes": 580 * 1024, "available_bytes": 420 * 1024, "total_bytes": 1000 * 1024}


def test_parse_loadavg_fixture():
    assert procfs.parse_loadavg(fixture("loadavg")) == float(fixture("loadavg").split()[0])


# ----- net -----


def test_parse_net_dev_fixture():
    text = fixture("net_dev.1")
    net = procfs.parse_net_dev(text)
    assert "lo" in net and "eth0" in net
    eth0 = next(ln for ln in text.split("\n") if ln.strip().startswith("eth0:")).split(":")[1].split()
    assert net["eth0"] == (int(eth0[0]), int(eth0[8]))


def test_parse_net_dev_glued_counters():
    text = (
        "Inter-|   Receive |  Transmit\n face |bytes packets|bytes\n"
        "  eth0:4294967296 10 0 0 0 0 0 0 123 4 0 0 0 0 0 0\n"
        "veth-a.1: 5 1 0 0 0 0 0 0 6 1 0 0 0 0 0 0\n"
    )
    assert procfs.parse_net_dev(text) == {"eth0": (4294967296, 123), "veth-a.1": (5, 6)}


def test_net_rates_per_second_new_iface_skipped_and_reset_is_zero():
    prev = {"lo": (1000, 1000), "eth0": (5000, 9000)}
    cur = {"lo": (1500, 1250), "eth0": (10, 9100), "veth0": (77, 77)}
    assert procfs.net_rates(prev, cur, 0.5) == {
        "eth0": {"rx_Bps": 0.0, "tx_Bps": 200.0},
        "lo": {"rx_Bps": 1000.0, "tx_Bps": 500.0},
    }


def test_net_rates_fixture_keeps_lo():
    prev, cur = procfs.parse_net_dev(fixture("net_dev.1")), procfs.parse_net_dev(fixture("net_dev.2"))
    rates = procfs.net_rates(prev, cur, 1.0)
    assert set(rates) == set(cur)
    assert "lo" in rates
    assert all(v["rx_Bps"] >= 0 and v["tx_Bps"] >= 0 for v in rates.values())


# ----- disks -----

DISKSTATS = """\
   8       0 sda 100 0 1000 0 50 0 2000 0 0 0 0 0 0 0 0 0 0
   8       1 sda1 90 0 900 0 40 0 1900 0 0 0 0 0 0 0 0 0 0
 259       0 nvme0n1 10 0 4000 0 5 0 8000 0 0 0 0
 259       1 nvme0n1p1 10 0 4000 0 5 0 8000 0 0 0 0
 179       0 mmcblk0 1 0 10 0 1 0 10 0 0 0 0
 179       1 mmcblk0p1 1 0 10 0 1 0 10 0 0 0 0
 252       0 vda 0 0 0 0 0 0 0 0 0 0 0
 202       0 xvda 0 0 0 0 0 0 0 0 0 0 0
   7       0 loop0 3 0 30 0 0 0 0 0 0 0 0
 253       0 dm-0 80 0 800 0 40 0 1900 0 0 0 0
   9       0 md0 1 0 8 0 1 0 8 0 0 0 0
 251       0 zram0 1 0 8 0 1 0 8 0 0 0 0
 104       0 cciss/c0d0 1 0 8 0 1 0 8 0 0 0 0
   3       1 hda1 7 10 8 9
"""


def test_parse_diskstats_fixture_and_old_partition_lines():
    stats = procfs.parse_diskstats(fixture("diskstats.1"))
    vda = next(ln for ln in fixture("diskstats.1").split("\n") if " vda " in ln).split()
    assert stats["vda"] == (int(vda[5]), int(vda[9]))
    parsed = procfs.parse_diskstats(DISKSTATS)
    assert parsed["sda"] == (1000, 2000)
    assert parsed["cciss/c0d0"] == (8, 8)
    assert "hda1" not in parsed  # 2.6-era 7-field partition line carries no sector counts


def test_whole_disks_by_name_without_sysfs():
    names = procfs.parse_diskstats(DISKSTATS)
    assert procfs.whole_disks(names, sys_block=None) == ["cciss/c0d0", "mmcblk0", "nvme0n1", "sda", "vda", "xvda"]
    assert procfs.is_partition("sda1", names) and procfs.is_partition("nvme0n1p1", names)
    assert not procfs.is_partition("nvme0n1", names) and not procfs.is_partition("sda", names)


def test_whole_disks_with_sysfs(tmp_path):
    # Partitions are not in /sys/block; loop, dm, md and zram are, but have no device link.
    for name in ("sda", "nvme0n1", "cciss!c0d0"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "device").mkdir()
    for name in ("loop0", "dm-0", "md0", "zram0"):
        (tmp_path / name).mkdir()
    names = procfs.parse_diskstats(DISKSTATS)
    assert procfs.whole_disks(names, sys_block=str(tmp_path)) == ["cciss/c0d0", "nvme0n1", "sda"]


def test_whole_disks_falls_back_to_names_when_sysfs_shows_no_devices(tmp_path):
    (tmp_path / "sda").mkdir()  # e.g. a container's sysfs without device links
    names = procfs.parse_diskstats(DISKSTATS)
    assert procfs.whole_disks(names, sys_block=str(tmp_path)) == procfs.whole_disks(names, sys_block=None)


def test_disk_rates_counts_whole_disks_only_in_bytes():
    prev = procfs.parse_diskstats(DISKSTATS)
    cur = {k: (r + 10, w + 20) for k, (r, w) in prev.items()}
    cur["sdb"] = (999, 999)  # appeared mid-interval: no rate yet
    rates = procfs.disk_rates(prev, cur, ["sda", "nvme0n1", "sdb"], 2.0)
    assert rates == {"read_Bps": 2 * 10 * 512 / 2.0, "write_Bps": 2 * 20 * 512 / 2.0}


def test_disk_rates_fixture():
    prev, cur = procfs.parse_diskstats(fixture("diskstats.1")), procfs.parse_diskstats(fixture("diskstats.2"))
    rates = procfs.disk_rates(prev, cur, ["vda"], 1.0)
    assert rates["read_Bps"] == (cur["vda"][0] - prev["vda"][0]) * 512
    assert rates["write_Bps"] == (cur["vda"][1] - prev["vda"][1]) * 512


# ----- processes -----


def test_parse_pid_stat_and_statm_fixtures():
    stat = procfs.parse_pid_stat(fixture("pid_stat"))
    fields = fixture("pid_stat").split()
    assert stat == procfs.PidStat(name="sleep", state="S", cpu_ticks=int(fields[13]) + int(fields[14]),
                              reaped_ticks=int(fields[15]) + int(fields[16]))
    assert procfs.parse_pid_statm(fixture("pid_statm")) == int(fixture("pid_statm").split()[1]) > 0


def test_parse_pid_stat_hostile_comm():
    text = "42 (my (evil) ) S x) R 1 42 42 0 -1 0 0 0 0 0 7 5 3 1 20 0 3 0 100 1000 77 0\n"
    stat = procfs.parse_pid_stat(text)
    assert stat == procfs.PidStat(name="my (evil) ) S x", state="R", cpu_ticks=12, reaped_ticks=4)
    assert stat.tree_ticks == 16


def test_parse_children():
    assert procfs.parse_children("12 345 \n") == [12, 345]
    assert procfs.parse_children("") == []


@pytest.mark.parametrize(
    "text, pid", [("123\n", 123), ("  42 extra\n", 42), ("", None), ("abc", None), ("0", None), ("-5", None)]
)
def test_parse_pid_file(text, pid):
    assert procfs.parse_pid_file(text) == pid


def test_parse_pids():
    assert procfs.parse_pids("1,2, 3,,") == [1, 2, 3]
    assert procfs.parse_pids("") == []
    with pytest.raises(ValueError):
        procfs.parse_pids("1,x")


# ----- the sampler on this machine -----


def sleeper() -> subprocess.Popen:
    return subprocess.Popen(["sleep", "60"])


def test_sampler_reports_a_dead_pid_once_and_a_missing_one_at_start():
    proc = sleeper()
    sampler = hm.Sampler(pids=[proc.pid, 2**22 + 12345])  # above any pid_max: never exists
    try:
        assert sampler.sample() is None
        time.sleep(0.05)
        first = sampler.sample()["procs"]
        assert first[str(2**22 + 12345)] == {"gone": True, "name": None}
        assert first[str(proc.pid)]["name"] == "sleep" and first[str(proc.pid)]["rss_bytes"] > 0
        proc.kill()  # still a zombie until reaped: counts as gone already
        time.sleep(0.05)
        second = sampler.sample()["procs"]
        assert second == {str(proc.pid): {"gone": True, "name": "sleep"}}
        proc.wait()
        assert sampler.sample()["procs"] == {}
    finally:
        proc.kill()
        proc.wait()
        sampler.close()


def test_sampler_follows_a_pid_file_across_restarts(tmp_path):
    pid_file = tmp_path / "server.pid"
    sampler = hm.Sampler(pid_files=[str(pid_file)])
    a = b = None
    try:
        assert sampler.sample() is None
        assert sampler.sample()["procs"] == {}  # no pidfile yet: nothing, no crash
        a = sleeper()
        pid_file.write_text(f"{a.pid}\n")
        adopted = sampler.sample()["procs"]
        assert adopted == {str(a.pid): {"cpu_pct": None, "rss_bytes": adopted[str(a.pid)]["rss_bytes"],
                                        "name": "sleep", "tree": 1, "pid_file": str(pid_file)}}
        steady = sampler.sample()["procs"][str(a.pid)]
        assert steady["cpu_pct"] is not None and 0 <= steady["cpu_pct"] < 50
        a.kill()
        a.wait()
        b = sleeper()
        pid_file.write_text(f"{b.pid}\n")
        restarted = sampler.sample()["procs"]
        assert restarted[str(a.pid)] == {"gone": True, "name": "sleep", "pid_file": str(pid_file)}
        assert restarted[str(b.pid)]["cpu_pct"] is None and restarted[str(b.pid)]["rss_bytes"] > 0
        assert set(sampler.sample()["procs"]) == {str(b.pid)}
    finally:
        for p in (a, b):
            if p is not None:
                p.kill()
                p.wait()
        sampler.close()


def test_a_watched_process_counts_its_whole_tree():
    """A server is often a tree (gunicorn's master idles while its workers serve): the CPU of a
    child, living or already exited and reaped, and the memory of the living ones are the
    watched process's. Here a shell's child burns 0.3 s of CPU and exits; then it sleeps."""
    burn = "import time\nwhile time.process_time() < 0.3: pass"
    shell = subprocess.Popen(["sh", "-c", f"read go; {sys.executable} -c '{burn}'; sleep 60"], stdin=subprocess.PIPE)
    sampler = hm.Sampler(pids=[shell.pid])
    try:
        assert sampler.sample() is None
        shell.stdin.write(b"go\n")
        shell.stdin.close()
        deadline = time.monotonic() + 60
        while not _children_named(shell.pid, "sleep") and time.monotonic() < deadline:
            time.sleep(0.05)  # the burner has exited (reaped by the shell) once sleep runs
        sample = sampler.sample()
        entry = sample["procs"][str(shell.pid)]
        assert entry["tree"] == 2  # the shell and its sleep
        cpu_seconds = entry["cpu_pct"] / 100 * sample["dt"]
        assert cpu_seconds >= 0.25, entry  # the exited child's 0.3 s, through the shell's reaped ticks
        own_rss = procfs.parse_pid_statm(Path(f"/proc/{shell.pid}/statm").read_text()) * procfs.PAGE_BYTES
        assert entry["rss_bytes"] > own_rss  # the sleep's memory too
    finally:
        shell.kill()
        shell.wait()
        sampler.close()


def _children_named(pid: int, name: str) -> bool:
    children = procfs.parse_children(Path(f"/proc/{pid}/task/{pid}/children").read_text())
    return any(Path(f"/proc/{c}/comm").read_text().strip() == name for c in children)


def test_sampler_keeps_files_open_between_samples():
    sampler = hm.Sampler()
    try:
        sampler.sample()
        fds = len(os.listdir("/proc/self/fd"))
        for _ in range(3):
            sampler.sample()
        assert len(os.listdir("/proc/self/fd")) == fds
    finally:
        sampler.close()


def meminfo_total() -> int:
    return procfs.parse_meminfo(Path("/proc/meminfo").read_text())["MemTotal"]


def test_main_smoke_on_this_machine(tmp_path):
    """The real thing for ~2.5 s at 0.5 s: sane values in every line, and every second on disk."""
    out = tmp_path / "sub" / "metrics.ndjson"
    proc = sleeper()
    try:
        started = time.monotonic()
        rc = hm.main(["--interval", "0.5", "--duration", "2.5", "--out", str(out), "--pids", str(proc.pid)])
        elapsed = time.monotonic() - started
    finally:
        proc.kill()
        proc.wait()
    assert rc == 0
    assert 2.4 < elapsed < 3.5
    samples = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(samples) == 5
    total = meminfo_total()
    for s in samples:
        assert list(s) == ["t", "dt", "cpu", "cores", "load1", "mem", "net", "disk", "procs"]
        assert s["dt"] == pytest.approx(0.5, abs=0.2)
        assert all(0 <= v <= 100 for v in s["cpu"].values())
        assert sum(s["cpu"].values()) == pytest.approx(100, abs=0.1)
        assert s["cores"] == os.cpu_count()
        assert s["load1"] >= 0
        assert s["mem"]["total_bytes"] == total
        assert 0 < s["mem"]["used_bytes"] < total
        assert s["mem"]["used_bytes"] + s["mem"]["available_bytes"] == total
        assert len(s["net"]) >= 1
        assert all(v["rx_Bps"] >= 0 and v["tx_Bps"] >= 0 for v in s["net"].values())
        assert s["disk"]["read_Bps"] >= 0 and s["disk"]["write_Bps"] >= 0
        watched = s["procs"][str(proc.pid)]
        assert watched["name"] == "sleep" and watched["rss_bytes"] > 0
        assert 0 <= watched["cpu_pct"] < 50
    ts = [s["t"] for s in samples]
    assert ts == sorted(ts) and ts[-1] - ts[0] == pytest.approx(2.0, abs=0.3)
    assert abs(ts[-1] - time.time()) < 5


def test_main_appends_and_stops_cleanly_on_sigterm(tmp_path):
    """As deployed: a process, stopped by SIGTERM, exits 0 with only whole lines on disk."""
    out = tmp_path / "metrics.ndjson"
    out.write_text('{"earlier":"run"}\n')
    err = tmp_path / "stderr"
    with err.open("wb") as err_file:
        p = subprocess.Popen(
            [sys.executable, "-m", "bench.agent.hostmetrics", "--interval", "0.2", "--out", str(out)],
            cwd=str(REPO),
            stderr=err_file,
        )
    try:
        deadline = time.monotonic() + 10
        while len(out.read_text().splitlines()) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=5)
    finally:
        p.kill()
        p.wait()
    assert rc == 0, err.read_text()
    assert err.read_text() == ""
    text = out.read_text()
    assert text.endswith("\n")
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines[0] == {"earlier": "run"} and len(lines) >= 3
    assert all("cpu" in line for line in lines[1:])


def test_a_stop_between_samples_records_the_time_since_the_last_one(tmp_path):
    """On a loaded host the stop can come before a due sample is taken: the time since the last
    sample is written as one more (its dt), so the samples reach the stop, within half an interval."""
    out = tmp_path / "metrics.ndjson"
    p = subprocess.Popen([sys.executable, "-m", "bench.agent.hostmetrics", "--interval", "2", "--out", str(out)],
                         cwd=str(REPO), stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not out.exists() or not out.read_text():
            assert time.monotonic() < deadline, "no first sample"
            time.sleep(0.02)
        time.sleep(1.5)  # three quarters of the way to the next sample
        stopped_at = time.time()
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=10) == 0, p.stderr.read()
    finally:
        p.kill()
        p.wait()
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines[-1]["t"] >= stopped_at - 1.0, (stopped_at, lines)
    assert all("cpu" in line and line["dt"] >= 1.0 for line in lines)  # no sliver of a sample


def test_main_rejects_bad_arguments(tmp_path):
    assert hm.main(["--interval", "0", "--out", str(tmp_path / "x")]) == 2
    assert hm.main(["--duration", "0", "--out", str(tmp_path / "x")]) == 2
    assert hm.main(["--pids", "12,abc", "--out", str(tmp_path / "x")]) == 2
    with pytest.raises(SystemExit):
        hm.main([])  # --out is required
