"""A real local fleet for the marked suite: sshd hosts in network namespaces (root only).

One testbed (prefix "ft", its own subnet, so a developer's own ``tb`` testbed is untouched)
serves the whole session, in a scratch project directory; it is always taken down at the end.
FLEETBENCH_TEST_PREFIX and FLEETBENCH_TEST_SUBNET give concurrent sessions their own fleets;
tests name hosts as $h1..$h6 in spawn texts (``Project.spawn``). The topology tests (a bastion,
an unprivileged login) bring up one small testbed per module, one at a time, on
FLEETBENCH_TEST_PREFIX2 and FLEETBENCH_TEST_SUBNET2.
"""

from __future__ import annotations

import os
import shutil
import string
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PYENV = Path("/root/.pyenv/versions")


def _pyenv(version_prefix: str) -> str | None:
    for d in sorted(PYENV.glob(f"{version_prefix}*")) if PYENV.is_dir() else []:
        exe = d / "bin" / f"python{version_prefix}"
        if exe.exists():
            return str(exe)
    return None


@dataclass
class Project:
    """A scratch project directory with a testbed up; runs inv and fab as a user would."""

    path: Path
    hosts: list[str]
    pythons: dict[str, str]

    def inv(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        return self._run([str(BIN / "inv"), "--search-root", str(REPO), *args], check, timeout)

    def fab(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        return self._run([str(BIN / "fab"), "--search-root", str(REPO), "-S", str(self.path / ".testbed/ssh_config"),
                          *args], check, timeout)

    def ssh(self, host: str, command: str, check: bool = True) -> subprocess.CompletedProcess:
        return self._run(["ssh", "-F", str(self.path / ".testbed/ssh_config"), "-o", "BatchMode=yes", host, command],
                         check, 60)

    def _run(self, argv: list[str], check: bool, timeout: float) -> subprocess.CompletedProcess:
        proc = subprocess.run(argv, cwd=self.path, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
                                 f"\n--- stderr\n{proc.stderr[-4000:]}")
        return proc

    def reset(self) -> None:
        """Nothing deployed anywhere (tests share this fleet): every process of ours stopped,
        every remote file removed, no deployment record."""
        self.fab("-H", ",".join(self.hosts), "stop")
        for host in self.hosts:
            self.ssh(host, "rm -rf ~/.fleetbench")
        (self.path / ".fleetbench" / "state.json").unlink(missing_ok=True)

    def spawn(self, template: str) -> str:
        """A spawn text with $h1..$hN replaced by this fleet's host names."""
        return string.Template(template).safe_substitute({f"h{i + 1}": h for i, h in enumerate(self.hosts)})

    def write_spawn(self, name: str, text: str) -> Path:
        path = self.path / name
        path.write_text(self.spawn(text))
        return path


def _need_testbed() -> None:
    if os.geteuid() != 0:
        pytest.skip("the testbed needs root (network namespaces)")
    if not shutil.which("sshd") and not Path("/usr/sbin/sshd").exists():
        pytest.skip("sshd missing: apt-get install openssh-server (make test installs it)")


@contextmanager
def topology_project(tmp_path_factory, name: str, hosts: int = 3, pythons: dict[str, str] | None = None,
                     **topology) -> Iterator[Project]:
    """A scratch project with a small testbed of its own topology (``user=``, ``bastion=``, ``nat=``,
    ``sshd_limits=``) and interpreters (``pythons``: host name -> python3 it runs)."""
    _need_testbed()
    from devtools.testbed import Testbed

    path = tmp_path_factory.mktemp(name)
    testbed = Testbed(path / ".testbed", prefix=os.environ.get("FLEETBENCH_TEST_PREFIX2", "fw"),
                      subnet=int(os.environ.get("FLEETBENCH_TEST_SUBNET2", "249")), **topology)
    try:
        yield Project(path, [h.name for h in testbed.up(hosts, pythons)], dict(pythons or {}))
    finally:
        testbed.down()


@pytest.fixture(scope="session")
def project(tmp_path_factory) -> Project:
    _need_testbed()
    from devtools.testbed import Testbed

    path = tmp_path_factory.mktemp("project")
    prefix = os.environ.get("FLEETBENCH_TEST_PREFIX", "ft")
    subnet = int(os.environ.get("FLEETBENCH_TEST_SUBNET", "251"))
    # Mixed interpreters where this machine has them: the pipeline must serve them all.
    pythons = {f"{prefix}{i}": exe for i, exe in ((3, _pyenv("3.9")), (5, _pyenv("3.12"))) if exe}
    testbed = Testbed(path / ".testbed", prefix=prefix, subnet=subnet)
    try:
        hosts = [h.name for h in testbed.up(6, pythons)]
        yield Project(path, hosts, pythons)
    finally:
        testbed.down()


# ---- testbed images: every recipe built once per session, started as soon as it is known ------

_image_builds: Future | None = None


def _start_image_builds() -> Future:
    from devtools.testbed.images import RECIPES, ImageSpec, ensure_images

    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(ensure_images, {name: ImageSpec(name, r) for name, r in RECIPES.items()})
    pool.shutdown(wait=False)
    return future


def pytest_collection_finish(session: pytest.Session) -> None:
    """When a collected test needs the testbed images, start building the ones the cache lacks
    (all recipes in parallel, at low priority) now: the builds overlap the tests that run first.
    A session that ends sooner waits for them (they are cached for the next one)."""
    global _image_builds
    wanted = any("testbed_images" in getattr(item, "fixturenames", ()) for item in session.items)
    if wanted and os.geteuid() == 0 and _image_builds is None and not session.config.option.collectonly:
        _image_builds = _start_image_builds()


@pytest.fixture(scope="session")
def testbed_images() -> dict:
    """Every recipe's Image (built once per session, or taken from the image cache)."""
    global _image_builds
    _need_testbed()
    if _image_builds is None:
        _image_builds = _start_image_builds()
    return _image_builds.result()
