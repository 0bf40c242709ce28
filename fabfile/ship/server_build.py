"""A server's own files: built here once per host platform, packed, pushed like a pex, unpacked.

The spawn file's ``server.build.command`` (bench.spawn.server_files) runs locally, in
``build.dir``, once for each distinct platform of the server hosts, with the Go cross-compile
variables and ``FLEETBENCH_PLATFORM`` set from what the hosts reported, and ``{out}`` an
empty directory. What it writes there, and the ``files`` entries beside it, become one
*bundle*: a gzip'd tar made byte-identical for identical contents (sorted, no times, no
owners), so it is named by its own sha256 like a pex and travels the same way (cat, sha256
checked on the host, atomic rename, the relay, skipped when the host has it). On the host it
is unpacked once into ``~/.fleetbench/bin/files-<sha>/`` (``{bin}``), via a temporary
directory and a rename: an unchanged build pushes and unpacks nothing.
"""

from __future__ import annotations

import gzip
import io
import os
import shlex
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.spawn import server_files, spec
from fabfile.remote.fleet import Fleet, Interpreter
from fabfile.remote.shell import BIN_DIR, cmd, run, tail
from fabfile.ship.build import Artifact, BuildError
from fabfile.ship.push import sha256_file

Echo = Callable[[str], None]

BUNDLE = "server-files"
#: Go's names for what ``platform.machine()`` and ``platform.system()`` say on the hosts.
GOARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "i386": "386", "i686": "386",
          "armv6l": "arm", "armv7l": "arm", "armv8l": "arm", "ppc64le": "ppc64le", "s390x": "s390x",
          "riscv64": "riscv64", "mips64": "mips64", "loongarch64": "loong64"}
GOARM = {"armv6l": "6", "armv7l": "7", "armv8l": "7"}
BUILD_OUTPUT_LINES = 30


@dataclass(frozen=True)
class Platform:
    """A server host's OS and CPU, as the build sees them."""

    system: str  # platform.system().lower(): "linux", "darwin", "freebsd"
    machine: str  # platform.machine(): "x86_64", "aarch64", "armv7l"

    @property
    def name(self) -> str:
        return f"{self.system}-{self.machine}"

    def env(self) -> dict[str, str]:
        """What a build is told: FLEETBENCH_PLATFORM always, Go's variables where Go knows the CPU."""
        out = {"FLEETBENCH_PLATFORM": self.name, "GOOS": self.system, "CGO_ENABLED": "0"}
        if self.machine in GOARCH:
            out["GOARCH"] = GOARCH[self.machine]
        if self.machine in GOARM:
            out["GOARM"] = GOARM[self.machine]
        return out


def platform_of(interpreter: Interpreter) -> Platform:
    return Platform(interpreter.system.lower(), interpreter.machine)


@dataclass(frozen=True)
class Bundle(Artifact):
    """The packed files of one platform; on hosts a .tgz beside the pexes and its unpacked ``dir``."""

    platform: str = ""

    @property
    def remote_path(self) -> str:
        return f"{BIN_DIR}/files-{self.sha256[:16]}.tgz"

    @property
    def dir(self) -> str:
        """``{bin}``, relative to the login's home."""
        return f"{BIN_DIR}/files-{self.sha256[:16]}"

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "platform": self.platform, "dir": self.dir}


def restore(data: Mapping[str, str]) -> Bundle:
    """A Bundle from its ``to_dict()`` (the deployment record)."""
    return Bundle(data["name"], Path(data["path"]), data["sha256"], data["platform"])


def bundle_key(platform: str) -> str:
    """The bundle's name among a deploy's artifacts."""
    return f"{BUNDLE}:{platform}"


def wants_pex(server: spec.Server) -> bool:
    """Whether the server needs a server pex: its requirements run it; a server that pushes no
    files of its own always runs from one, even with ``requirements = []`` (a standard-library
    module such as ``http.server``). The redis kinds with files of their own start the pushed
    redis-server and need none (our agent, not a redis-cli, probes the nodes)."""
    pushes_files = server.build is not None or bool(server.files)
    if server.kind != "command":
        return not pushes_files
    return bool(server.requirements) or not pushes_files


def build_bundles(server: spec.Server, base_dir: Path, platforms: Mapping[str, Platform], out_dir: Path,
                  echo: Echo = print) -> dict[str, Bundle]:
    """One bundle per distinct platform of ``platforms`` (server host -> its platform), by artifact
    key (:func:`bundle_key`); nothing when the server pushes no files of its own."""
    own = server.own_files
    if not own.pushed:
        return {}
    out_dir.mkdir(parents=True, exist_ok=True)
    bundles: dict[str, Bundle] = {}
    for platform in sorted(set(platforms.values()), key=lambda p: p.name):
        with tempfile.TemporaryDirectory(prefix="fleetbench-out-") as out:
            if own.build is not None:
                run_build(own.build, base_dir, Path(out), platform, echo)
            entries = _entries(Path(out), own.files, base_dir)
            _check_start(server, entries, platform)
            bundles[bundle_key(platform.name)] = pack(entries, out_dir, platform.name)
        bundle = bundles[bundle_key(platform.name)]
        echo(f"  {BUNDLE} for {platform.name}: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, "
             f"{bundle.path.stat().st_size / 1e6:.1f} MB, sha256 {bundle.sha256[:16]}")
    return bundles


def run_build(build: server_files.Build, base_dir: Path, out: Path, platform: Platform, echo: Echo = print) -> None:
    """``build.command`` through the shell in ``build.dir``, ``{out}`` filled in; a failure is a
    BuildError naming the command and the platform, with the tail of its output."""
    command = build.command.format(out=shlex.quote(str(out)))
    where = server_files.local_path(build.dir, base_dir)
    echo(f"  building server files for {platform.name}: {command}")
    env = {**os.environ, **platform.env(), "FLEETBENCH_OUT": str(out)}
    try:
        done = subprocess.run(command, shell=True, cwd=where, env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    except OSError as e:
        raise BuildError(f"server.build.command {build.command!r} could not be started in {where}: "
                         f"{e.strerror or e}") from None
    if done.returncode != 0:
        output = tail(done.stdout, BUILD_OUTPUT_LINES).rstrip() or "(no output)"
        raise BuildError(f"server.build.command {build.command!r} failed for {platform.name} "
                         f"(exit {done.returncode}, in {where}); nothing was pushed. Its output:\n{output}")
    if not any(out.iterdir()):
        raise BuildError(f"server.build.command {build.command!r} wrote nothing into {{out}} ({out}) "
                         f"for {platform.name}")


def _entries(out: Path, files: Sequence[str], base_dir: Path) -> list[tuple[str, Path]]:
    """(name in the bundle, local path) of every top-level entry: the build's output, then the files."""
    entries = [(p.name, p) for p in sorted(out.iterdir())]
    built = {name for name, _ in entries}
    for entry in files:
        name = server_files.pushed_name(entry)
        if name in built:
            raise BuildError(f"server.files: {entry!r} would replace {name!r}, which the build wrote")
        path = server_files.local_path(entry, base_dir)
        if not path.exists():
            raise BuildError(f"server.files: {entry!r} does not exist ({path})")
        entries.append((name, path))
    return entries


def _check_start(server: spec.Server, entries: Sequence[tuple[str, Path]], platform: Platform) -> None:
    """What the nodes start must be an executable file of the bundle."""
    if server.kind != "command":
        wanted = server_files.REDIS_EXECUTABLE
    elif not server.requirements and server.script:
        wanted = server.script
    else:
        return
    first, _, rest = wanted.partition("/")
    found = next((p if not rest else p / rest for name, p in entries if name == first), None)
    if found is None or not found.is_file() or not os.access(found, os.X_OK):
        names = ", ".join(name for name, _ in entries)
        raise BuildError(f"the server files for {platform.name} hold no executable {wanted!r} "
                         f"(they hold: {names}); it is what the server nodes start")


def pack(entries: Sequence[tuple[str, Path]], out_dir: Path, platform: str) -> Bundle:
    """A gzip'd tar of ``entries``, byte-identical for identical contents, named by its sha256.

    Symlinks are followed (a bundle holds files and directories only); modes keep only
    whether a file is executable; times and owners are zero.
    """
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0, filename="") as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, path in entries:
                for arcname, local in _walk(name, path):
                    _add(tar, arcname, local)
    data = buffer.getvalue()
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{BUNDLE}-{os.getpid()}.tgz"
    tmp.write_bytes(data)
    sha = sha256_file(tmp)
    final = out_dir / f"{BUNDLE}-{sha[:16]}.tgz"
    tmp.replace(final)
    return Bundle(BUNDLE, final, sha, platform)


def _walk(name: str, path: Path) -> list[tuple[str, Path]]:
    if not path.is_dir():
        return [(name, path)]
    out = [(name, path)]
    for root, dirs, files in os.walk(path, followlinks=True):
        dirs.sort()
        rel = Path(root).relative_to(path)
        for d in dirs:
            out.append(((Path(name) / rel / d).as_posix(), Path(root, d)))
        for f in sorted(files):
            out.append(((Path(name) / rel / f).as_posix(), Path(root, f)))
    return sorted(out)


def _add(tar: tarfile.TarFile, arcname: str, local: Path) -> None:
    info = tarfile.TarInfo(arcname)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if local.is_dir():
        info.type = tarfile.DIRTYPE
        info.mode = 0o700
        tar.addfile(info)
        return
    try:
        data = local.read_bytes()
    except OSError as e:
        raise BuildError(f"cannot read server file {str(local)!r}: {e.strerror or e}") from None
    info.size = len(data)
    info.mode = 0o700 if os.access(local, os.X_OK) else 0o600
    tar.addfile(info, io.BytesIO(data))


# -- on the hosts ------------------------------------------------------------------------------

# Runs on the host's python3 (3.9+, stdlib only): unpack a verified bundle into its directory,
# once. Only plain files and directories inside it are accepted; everything lands 0700/0600
# in a temporary directory renamed into place, so a half-unpacked bundle is never started.
_UNPACK = """\
import os, shutil, sys, tarfile
src, dest = sys.argv[1:3]
if os.path.isdir(dest):
    print("have")
    sys.exit(0)
tmp = "%s.part-%d" % (dest, os.getpid())
os.mkdir(tmp, 0o700)
try:
    with tarfile.open(src, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if member.name.startswith("/") or ".." in parts or not (member.isfile() or member.isdir()):
                sys.exit("refusing bundle entry %r" % member.name)
            target = os.path.join(tmp, *parts)
            if member.isdir():
                os.makedirs(target, 0o700, exist_ok=True)
                continue
            os.makedirs(os.path.dirname(target), 0o700, exist_ok=True)
            mode = 0o700 if member.mode & 0o100 else 0o600
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with tar.extractfile(member) as fin, os.fdopen(fd, "wb") as fout:
                shutil.copyfileobj(fin, fout)
    os.rename(tmp, dest)
except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
print("unpacked")
"""


def host_bundles(artifacts: Mapping[str, Artifact], interpreters: Mapping[str, Interpreter],
                 hosts: Sequence[str]) -> dict[str, Bundle]:
    """The bundle each of ``hosts`` gets (none when the server pushes no files)."""
    out: dict[str, Bundle] = {}
    for host in hosts:
        bundle = artifacts.get(bundle_key(platform_of(interpreters[host]).name))
        if isinstance(bundle, Bundle):
            out[host] = bundle
    return out


def unpack(fleet: Fleet, bundles: Mapping[str, Bundle]) -> dict[str, bool]:
    """Unpack each host's pushed bundle into its directory; True where that was needed."""
    def one(host: str) -> bool:
        bundle = bundles[host]
        return run(fleet[host], cmd("python3", "-c", _UNPACK, bundle.remote_path, bundle.dir)).strip() == "unpacked"

    return fleet.each(one, list(bundles), what="unpack server files")
