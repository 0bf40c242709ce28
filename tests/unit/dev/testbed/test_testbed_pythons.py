"""The testbed's per-host interpreters: overrides, probing, relocation, the wrapper."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from devtools.testbed import pythons as tbm
from devtools.testbed.pythons import PythonSpec, parse_python_overrides
from devtools.testbed.system import TestbedError

# ---- python overrides -------------------------------------------------------------------------


def test_parse_overrides_basic():
    assert parse_python_overrides([]) == {}
    assert parse_python_overrides(["tb3=/root/.pyenv/versions/3.9.18/bin/python3.9"]) == {
        "tb3": "/root/.pyenv/versions/3.9.18/bin/python3.9"
    }
    got = parse_python_overrides([" tb1 = /usr/bin/python3.11 ", "*=/opt/py/bin/python3"])
    assert got == {"tb1": "/usr/bin/python3.11", "*": "/opt/py/bin/python3"}


def test_parse_overrides_single_string_and_tilde():
    assert parse_python_overrides("tb2=~/py") == {"tb2": os.path.expanduser("~/py")}


def test_parse_overrides_path_may_contain_equals():
    assert parse_python_overrides(["tb1=/opt/a=b/python3"]) == {"tb1": "/opt/a=b/python3"}


@pytest.mark.parametrize(
    "bad, needle",
    [
        ("tb3", "'tb3'"),  # no '='
        ("=/usr/bin/python3", "no host name"),
        ("tb3=", "no interpreter path"),
        ("TB3=/usr/bin/python3", "'TB3'"),
        ("tb=/usr/bin/python3", "'tb'"),  # a prefix, not a host
        ("tb03=/usr/bin/python3", "'tb03'"),
        ("tb 3=/usr/bin/python3", "'tb 3'"),
    ],
)
def test_parse_overrides_errors_name_the_bad_value(bad, needle):
    with pytest.raises(TestbedError) as e:
        parse_python_overrides([bad])
    assert needle in str(e.value)


def test_parse_overrides_duplicate():
    with pytest.raises(TestbedError, match="tb1.*twice"):
        parse_python_overrides(["tb1=/a", "tb1=/b"])

def test_wrapper_runs_the_chosen_python(tmp_path):
    """The wrapper put in a host's /usr/local/bin, tried here on the controller's own python."""
    exe = os.path.realpath(sys.executable)
    spec = PythonSpec(path=exe, executable=exe, version="3.11.9", prefix=sys.base_prefix, relocate=True,
                      relative_executable="bin/python3.11")
    lib = str(tmp_path / "lib")
    w = tmp_path / "python3"
    w.write_text(tbm.wrapper_text(spec, exe, lib, mount="/run/x"))
    w.chmod(0o755)
    code = "import os, sys; print(sys.version_info[0]); print(os.environ['LD_LIBRARY_PATH'])"
    out = subprocess.run([str(w), "-c", code],
                         capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": lib})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["3", lib]  # not prepended twice


def test_probe_python_accepts_base_and_rejects_venv():
    spec = tbm.probe_python("/usr/bin/python3", "default python")
    assert spec.version.startswith("3.") and spec.prefix == "/usr" and not spec.relocate
    with pytest.raises(TestbedError, match="not an absolute path"):
        tbm.probe_python("python3", "python override for tb1")
    with pytest.raises(TestbedError, match="tb1.*does not exist"):
        tbm.probe_python("/nonexistent/python3", "python override for tb1")
    if sys.prefix != sys.base_prefix:
        with pytest.raises(TestbedError, match="virtual environment"):
            tbm.probe_python(sys.executable, "python override for tb1")


def test_probe_python_not_executable(tmp_path):
    f = tmp_path / "python3"
    f.write_text("#!/bin/sh\n")
    f.chmod(0o644)
    if os.geteuid() == 0:
        f.chmod(0o600)  # root passes X_OK only if some x bit is set
    with pytest.raises(TestbedError, match=f"python override for tb2: {f} is not an executable"):
        tbm.probe_python(str(f), "python override for tb2")


def test_pyenv_python_is_relocated():
    p = "/root/.pyenv/versions/3.9.18/bin/python3.9"
    if not os.access(p, os.X_OK):
        pytest.skip("no pyenv 3.9.18 here")
    spec = tbm.probe_python(p, "python override for tb3")
    assert spec.relocate and spec.version.startswith("3.9.")
    assert spec.prefix == "/root/.pyenv/versions/3.9.18" and spec.relative_executable == "bin/python3.9"
    assert tbm.wrapper_names(spec) == ("python3", "python3.9")
