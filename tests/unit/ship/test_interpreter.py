"""The bundled python: its pure rules, the checks that refuse a bad archive before any push, and
the host-side install (run for real with sh), including a host where nothing can execute."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from fabfile.ship import bundled, interpreter, interpreter_host
from fabfile.ship import interpreter_pins as pins


def test_trimming_leaves_out_tests_guis_and_unbundled_modules():
    assert pins.trimmed("test/test_os.py") and pins.trimmed("tkinter/__init__.py")
    assert pins.trimmed("idlelib/idle.py") and pins.trimmed("ensurepip/__init__.py") and pins.trimmed("lib2to3/x.py")
    assert pins.trimmed("lib-dynload/_tkinter.cpython-311-x86_64-linux-gnu.so")
    assert pins.trimmed("lib-dynload/readline.cpython-311-x86_64-linux-gnu.so")
    assert pins.trimmed("asyncio/__pycache__/base_events.cpython-311.pyc")
    assert not pins.trimmed("asyncio/base_events.py") and not pins.trimmed("testing.py")
    assert not pins.trimmed("lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so")


def test_every_pin_is_a_sha256_and_an_https_or_http_pool_url_of_debian():
    for machine, debs in pins.DEBS.items():
        assert machine in pins.LOADERS and machine in pins.MULTIARCH
        assert {d.package for d in debs} >= {"python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib",
                                             "libc6"}
        for deb in debs:
            assert len(deb.sha256) == 64 and int(deb.sha256, 16) >= 0
            assert deb.url.startswith((pins.DEBIAN + "/pool/", pins.SECURITY + "/pool/")) and deb.url.endswith(".deb")


def test_the_recipe_key_changes_with_what_decides_the_bytes(monkeypatch):
    before = interpreter.recipe_key("x86_64")
    monkeypatch.setattr(pins, "TRIM_DIRS", pins.TRIM_DIRS | {"email"})
    assert interpreter.recipe_key("x86_64") != before


def _ar(members: dict[str, bytes]) -> bytes:
    out = b"!<arch>\n"
    for name, data in members.items():
        out += f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode() + data
        out += b"\n" if len(data) % 2 else b""
    return out


def test_a_deb_is_read_as_an_ar_archive_of_tarballs(tmp_path):
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w:xz") as tar:
        info = tarfile.TarInfo("./usr/bin/python3.11")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"elf"))
        link = tarfile.TarInfo("./usr/lib/python3.11/sitecustomize.py")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/python3.11/sitecustomize.py"
        tar.addfile(link)
    deb = tmp_path / "x.deb"
    deb.write_bytes(_ar({"debian-binary": b"2.0\n", "control.tar.xz": b"odd", "data.tar.xz": payload.getvalue()}))
    assert set(interpreter.ar_members(deb.read_bytes())) == {"debian-binary", "control.tar.xz", "data.tar.xz"}
    interpreter.unpack_deb(deb, tmp_path / "out")
    assert (tmp_path / "out/usr/bin/python3.11").read_bytes() == b"elf"
    assert not (tmp_path / "out/usr/lib/python3.11/sitecustomize.py").is_symlink()  # absolute: left out
    with pytest.raises(interpreter.InterpreterError, match="not an ar archive"):
        interpreter.ar_members(b"PK\x03\x04")


def test_a_download_that_does_not_match_its_pin_is_refused(tmp_path):
    served = tmp_path / "served.deb"
    served.write_bytes(b"not what was pinned")
    deb = pins.Deb("libfake1", served.as_uri(), "0" * 64)
    with pytest.raises(interpreter.InterpreterError, match=r"libfake1 from file://.* has sha256 [0-9a-f]{64}, "
                                                           r"pinned 0{64}: refused"):
        interpreter.fetch(deb, tmp_path / "debs")
    assert not list((tmp_path / "debs").iterdir())  # nothing half-kept


def _archive(tmp_path: Path, machine: str) -> interpreter.Bundle:
    tree = tmp_path / "tree"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "python3.11").write_bytes(b"\x7fELF" + pins.LOADER_PLACEHOLDER.encode() + b"\0rest")
    (tree / interpreter.MANIFEST).write_text(json.dumps({"machine": machine}))
    path = tmp_path / f"python-{machine}.tar.gz"
    interpreter.pack(tree, path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return interpreter.Bundle(machine, path, sha, "3.11.2", "ld.so", "python3.11", 4, len(pins.LOADER_PLACEHOLDER) + 1)


def test_packing_is_reproducible(tmp_path):
    first = _archive(tmp_path / "a", "x86_64")
    second = _archive(tmp_path / "b", "x86_64")
    assert first.sha256 == second.sha256
    with gzip.open(first.path) as gz:
        assert gz.read(1)  # a gzip'd tar


def test_an_archive_whose_sha256_is_wrong_is_refused_before_it_is_pushed(tmp_path):
    bundle = _archive(tmp_path, "x86_64")
    with open(bundle.path, "ab") as fh:
        fh.write(b"corruption")
    with pytest.raises(interpreter.InterpreterError) as err:
        interpreter.check_archive(bundle, "x86_64")
    assert str(bundle.path) in str(err.value) and f"expected {bundle.sha256}" in str(err.value)
    assert "not pushed" in str(err.value)


def test_an_archive_for_another_machine_is_refused_before_it_is_pushed(tmp_path):
    bundle = _archive(tmp_path, "aarch64")
    with pytest.raises(interpreter.InterpreterError) as err:
        interpreter.check_archive(bundle, "x86_64")
    assert f"interpreter archive {bundle.path} is for aarch64 machine, not x86_64: not pushed" == str(err.value)
    interpreter.check_archive(bundle, "aarch64")  # the right one passes


def test_a_machine_without_pins_is_named():
    with pytest.raises(interpreter.InterpreterError, match="no bundled python for riscv64 hosts"):
        interpreter.build("riscv64")


def test_the_host_side_install_writes_the_loader_path_over_the_placeholder(tmp_path):
    """The real install command, with sh, on an archive whose 'python' is a shell script (so the
    smoke import is a no-op): unpacked under ~/.fleetbench/python, PT_INTERP bytes written."""
    bundle = _archive(tmp_path, "x86_64")
    script = b"#!/bin/sh\nexit 0\n"
    tree = tmp_path / "tree"
    data = script + b"\0" * 8 + pins.LOADER_PLACEHOLDER.encode() + b"\0"
    (tree / "bin" / "python3.11").write_bytes(data)
    (tree / "bin" / "python3.11").chmod(0o755)
    path = tmp_path / "python.tar.gz"
    interpreter.pack(tree, path)
    home = tmp_path / "home"
    (home / ".fleetbench" / "bin").mkdir(parents=True)
    shutil.copy(path, home / ".fleetbench/bin/p.tar.gz")
    offset = data.index(pins.LOADER_PLACEHOLDER.encode())
    command = interpreter_host.install_command(".fleetbench/bin/p.tar.gz", "abc", offset, bundle.length, "ld.so",
                                               "python3.11")
    env = {"HOME": str(home), "PATH": os.environ["PATH"]}
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True, env=env, check=True).stdout
    python = bundled.place("h1", out)
    real_home = str(home.resolve())
    assert python == f"{real_home}/.fleetbench/python/abc/bin/python3.11"
    written = Path(python).read_bytes()[offset:offset + bundle.length]
    loader = f"{real_home}/.fleetbench/python/abc/lib/ld.so".encode()
    assert written == loader + b"\0" * (bundle.length - len(loader))
    again = subprocess.run(["sh", "-c", command], capture_output=True, text=True, env=env, check=True).stdout
    assert again == out  # unpacked once: the second install finds it


def test_a_host_where_no_directory_can_execute_says_so_with_the_mounts_it_tried():
    out = ("noexec;/home/u/.fleetbench/python (mount /home): cannot execute there;"
           "/var/tmp/fleetbench-python-1000 (mount /var/tmp): cannot execute there;"
           "/dev/shm/fleetbench-python-1000 (mount /dev/shm): cannot execute there\n")
    with pytest.raises(bundled.NoExecutableDirectory) as err:
        bundled.place("rhel9", out)
    text = str(err.value)
    assert text.startswith("rhel9: `install the bundled python` failed")
    assert "no directory there can execute a file" in text
    for mount in ("(mount /home)", "(mount /var/tmp)", "(mount /dev/shm)"):
        assert mount in text


@pytest.mark.skipif(platform.system() != "Linux", reason="mount namespaces are Linux's")
def test_noexec_mounts_are_probed_for_real(tmp_path):
    """Every candidate on a noexec tmpfs (in a private mount namespace): the install says so."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        if os.environ.get("CI"):
            pytest.fail("this test needs root and unshare (make test runs as root)")
        pytest.skip("needs root and unshare")
    home = tmp_path / "home"
    home.mkdir()
    mounts = [str(home), "/var/tmp", "/dev/shm"]
    command = interpreter_host.install_command(".fleetbench/bin/p.tar.gz", "abc", 0, 256, "ld.so", "python3.11")
    setup = " && ".join(f"mount -t tmpfs -o noexec tmpfs {m}" for m in mounts)
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", f"{setup} && {command}"],
                          capture_output=True, text=True, env={"HOME": str(home), "PATH": os.environ["PATH"]})
    assert proc.returncode == 0, proc.stderr
    placed = interpreter_host.parse(proc.stdout)
    assert not placed.python
    assert [t.split(" (")[0] for t in placed.tried] == [f"{home}/.fleetbench/python", "/var/tmp/fleetbench-python-0",
                                                       "/dev/shm/fleetbench-python-0"]
    assert all("cannot execute there" in t for t in placed.tried), placed.tried
    assert f"(mount {home})" in placed.tried[0]


def test_down_removes_a_bundled_python_unpacked_outside_the_home(tmp_path):
    runtime = tmp_path / "run-user"
    (runtime / "fleetbench-python" / "abc" / "bin").mkdir(parents=True)
    env = {"HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(runtime), "PATH": os.environ["PATH"]}
    # The machine's own /var/tmp and /dev/shm are left alone: the same command, pointed elsewhere.
    command = interpreter_host.REMOVE_ELSEWHERE.replace("/var/tmp/", f"{tmp_path}/var-tmp/").replace(
        "/dev/shm/", f"{tmp_path}/shm/")
    assert command != interpreter_host.REMOVE_ELSEWHERE
    subprocess.run(["sh", "-c", command], env=env, check=True)
    assert not (runtime / "fleetbench-python").exists() and runtime.is_dir()
