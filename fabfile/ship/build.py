"""Building the server and agent pexes for the interpreters the hosts really have.

Each host's python3 is described by a *complete platform* (its markers and wheel tags), which
only the host itself can produce: we push a small pex of pex's own ``pex3`` tool once per
distinct interpreter, run ``pex3 interpreter inspect --markers --tags`` there, and cache the
answer locally by interpreter fingerprint. One multi-platform pex then serves every host.

Builds are byte-identical for identical inputs, so an input digest is a safe cache key and an
output is named by its own sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pex.version import __version__ as PEX_VERSION

import bench
from fabfile.errors import FleetbenchError
from fabfile.remote.fleet import Interpreter
from fabfile.remote.host import Host
from fabfile.remote.shell import BIN_DIR, PEX_ROOT, cmd, run, tail
from fabfile.ship.platforms import (
    Unbuildable,
    check_one_version_each,
    describe_platform,
    excluding,
    find_unbuildable,
    missing_project,
)
from fabfile.ship.push import push, sha256_file

#: What the agent needs on a host, and nothing else: the agent pex stays lean. Its histograms are
#: its own (``bench.wire.hdr``), so its one dependency is uvloop: pinned, so that every host of a
#: run gets the same one, and only where that release publishes wheels (CPython 3.9 to 3.14 on
#: Linux x86_64 and aarch64; glibc 2.17+ or musl 1.2+): elsewhere the agent runs on asyncio's
#: own loop, and so do they where the build finds no fitting wheel after all (an older glibc).
UVLOOP = "uvloop==0.23.0"
AGENT_REQUIREMENTS = (f"{UVLOOP}; sys_platform == 'linux' and platform_python_implementation == 'CPython'"
                      " and (platform_machine == 'x86_64' or platform_machine == 'aarch64')"
                      " and python_version >= '3.9' and python_version < '3.15'",)
AGENT_ENTRY = "bench.agent"
#: The parts of ``bench`` that run on hosts, with ``bench/__init__.py``: the agent and the wire
#: it speaks. The spawn file, merging, tables and plots (3.11-only tomllib, matplotlib) stay home.
AGENT_PACKAGES = ("agent", "wire")


class BuildError(FleetbenchError):
    pass


@dataclass(frozen=True)
class Artifact:
    """A built pex: where it is locally, its sha256, and the name it gets on hosts."""

    name: str  # "server" | "agent"
    path: Path
    sha256: str

    @property
    def remote_path(self) -> str:
        return f"{BIN_DIR}/{self.name}-{self.sha256[:16]}.pex"

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "path": str(self.path), "sha256": self.sha256, "remote_path": self.remote_path}


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _pex(args: Sequence[str], what: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pex", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"building {what} failed (pex exit {proc.returncode}):\n"
                         + tail(proc.stderr or proc.stdout, 30))


class Builder:
    """Builds and caches pexes and complete platforms under ``cache_dir`` (e.g. .fleetbench/)."""

    def __init__(self, cache_dir: Path, echo=print):
        self.cache_dir = cache_dir
        self.out_dir = cache_dir / "build"
        self.platform_dir = cache_dir / "platforms"
        self.echo = echo
        for d in (self.out_dir, self.platform_dir):
            d.mkdir(parents=True, exist_ok=True)
        # Probes run in parallel (one per distinct interpreter) and all need the pex3 tool.
        self._lock = threading.Lock()

    # -- complete platforms ---------------------------------------------------------------

    def pex3_tool(self) -> Artifact:
        """A pex of pex itself, run on hosts to describe their interpreter."""
        return self._cached("pex3", {"tool": "pex3", "pex": PEX_VERSION},
                            lambda out: _pex([f"pex=={PEX_VERSION}", "-c", "pex3", "-o", str(out)], "the pex3 tool"))

    def platform_file(self, interpreter: Interpreter) -> Path:
        return self.platform_dir / f"{_digest(interpreter.fingerprint)[:20]}.json"

    def probe_platform(self, c: Host, interpreter: Interpreter) -> Path:
        """The complete platform of ``c``'s python3, probed on the host once and cached."""
        path = self.platform_file(interpreter)
        if path.is_file():
            return path
        tool = self.pex3_tool()
        push(c, tool.path, tool.remote_path, tool.sha256)
        # --cache-dir too: pex3 would otherwise cache interpreter facts in ~/.cache/pex.
        out = run(c, f'PEX_ROOT="$HOME/{PEX_ROOT}" python3 {cmd(tool.remote_path)} interpreter inspect '
                     f'--markers --tags --cache-dir "$HOME/{PEX_ROOT}"')
        data = json.loads(out)  # fails loudly on garbage: better than a wrong platform
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(data, sort_keys=True))
        tmp.replace(path)
        return path

    # -- pexes -----------------------------------------------------------------------------

    def server(self, requirements: Sequence[str], script: str, platforms: Sequence[Path],
               base_dir: Path = Path(".")) -> Artifact:
        """A ``--venv`` pex that runs ``script`` in place (so the server is the pid we started).

        ``script`` is a console script of the requirements or, failing that, a module run like
        ``python -m`` (one of the requirements' or the standard library's). Requirements are
        PyPI specs or local project paths (``./app``, ``/src/app``, ``dist/app.whl``; relative
        to ``base_dir``, the spawn file's directory). Everything from an index must come as a
        wheel (``--no-build``: a build for another host's platform could silently produce the
        wrong one); local projects are built here first and must give a pure-Python wheel.
        """
        local = {req: path for req in requirements if (path := local_requirement(req, base_dir)) is not None}
        inputs = {"kind": "server", "requirements": list(requirements), "script": script,
                  "local": {req: _tree_digest(path) for req, path in local.items()},
                  "platforms": self._platform_texts(platforms), "pex": PEX_VERSION}

        def build(out: Path) -> None:
            with tempfile.TemporaryDirectory(prefix="fleetbench-wheels-") as wheels:
                reqs = [str(_pure_wheel(local[r], Path(wheels))) if r in local else r for r in requirements]
                common = [*reqs, "--venv", "--sh-boot", "--no-build"]
                try:
                    self._build_for([*common, "-c", script], platforms, out, "the server")
                    return
                except BuildError as exc:
                    if f"Could not find script {script!r}" not in str(exc):
                        raise
                self._build_for([*common, "-m", script], platforms, out, "the server")
            if not _runs_module(out, script):
                raise BuildError(f"server.script {script!r} is neither a console script nor a module (python -m) "
                                 f"of the server requirements ({', '.join(requirements) or 'none'}) "
                                 "or the standard library")

        return self._cached("server", inputs, build)

    def agent(self, platforms: Sequence[Path], modules: Mapping[str, Path] = {}) -> Artifact:
        """fleetbench's own agent (``AGENT_PACKAGES`` of ``bench``) and only its runtime deps: the
        tool deploys itself.

        ``modules`` (import name -> local .py file or package directory, from
        ``spec.agent_modules``) are the python workloads' code, shipped at the top level of the
        pex; their bytes are part of the digest, so editing one rebuilds the agent.
        """
        sources = agent_sources()
        extra = _module_sources(modules)
        inputs = {"kind": "agent", "requirements": list(AGENT_REQUIREMENTS), "entry": AGENT_ENTRY,
                  "sources": {k[len("bench/"):]: hashlib.sha256(v).hexdigest() for k, v in sources.items()},
                  "platforms": self._platform_texts(platforms), "pex": PEX_VERSION}
        if extra:  # only then: an agent without user modules keeps its cache key
            inputs["modules"] = {k: hashlib.sha256(v).hexdigest() for k, v in extra.items()}
        sources.update(extra)

        def build(out: Path) -> None:
            with tempfile.TemporaryDirectory(prefix="fleetbench-src-") as src:
                for rel, data in sources.items():
                    target = Path(src, rel)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(data)
                options = ["-D", src, "-m", AGENT_ENTRY, "--venv", "--sh-boot", "--no-build"]
                try:
                    self._build_for([*AGENT_REQUIREMENTS, *options], platforms, out, "the agent")
                except Unbuildable as exc:
                    if set(exc.missing.values()) != {"uvloop"}:
                        raise
                    # uvloop is the agent's option, not its need: where it has no wheel after all
                    # (an older glibc, say), that host's agents run on asyncio's loop.
                    for platform in sorted(exc.missing):
                        self.echo(f"  no uvloop wheel for {describe_platform(platform)}: agents there use asyncio")
                    self._build_for([excluding(AGENT_REQUIREMENTS[0], exc.missing), *AGENT_REQUIREMENTS[1:],
                                     *options], platforms, out, "the agent")
            try:
                check_one_version_each(out, "the agent pex")
            except FleetbenchError:
                out.unlink()
                raise

        return self._cached("agent", inputs, build)

    def _build_for(self, args: Sequence[str], platforms: Sequence[Path], out: Path, needed_by: str) -> None:
        """``pex args`` for all ``platforms`` into ``out``. When a requirement has no wheel for
        some of them: Unbuildable naming each such platform and the project it lacks (learnt by
        building for one platform at a time, only then), not pex's command line."""
        what = f"{needed_by} pex"
        try:
            _pex([*args, *self._platform_args(platforms), "-o", str(out)], what)
        except BuildError as exc:
            project = missing_project(str(exc))
            if project is None:
                raise
            distinct = sorted(set(platforms))
            if len(distinct) == 1:
                raise Unbuildable(needed_by, {distinct[0]: project}) from None

            def alone(platform: Path) -> str | None:
                with tempfile.TemporaryDirectory(prefix="fleetbench-probe-") as tmp:
                    try:
                        _pex([*args, *self._platform_args([platform]), "-o", str(Path(tmp, "one.pex"))], what)
                    except BuildError as one:
                        return str(one)
                return None

            missing = find_unbuildable(distinct, alone)
            if not missing:  # every platform builds alone: something else failed, say it as pex did
                raise
            raise Unbuildable(needed_by, missing) from None

    # -- cache -----------------------------------------------------------------------------

    def _cached(self, name: str, inputs: Mapping[str, object], build) -> Artifact:
        with self._lock:
            return self._cached_locked(name, inputs, build)

    def _cached_locked(self, name: str, inputs: Mapping[str, object], build) -> Artifact:
        index_path = self.out_dir / "index.json"
        index = json.loads(index_path.read_text()) if index_path.is_file() else {}
        key = _digest(inputs)
        hit = index.get(key)
        if hit and Path(hit["path"]).is_file():
            return Artifact(name, Path(hit["path"]), hit["sha256"])
        self.echo(f"  building {name} pex ...")
        tmp = self.out_dir / f".{name}-{os.getpid()}.pex"
        build(tmp)
        sha = sha256_file(tmp)
        final = self.out_dir / f"{name}-{sha[:16]}.pex"
        tmp.replace(final)
        index = json.loads(index_path.read_text()) if index_path.is_file() else {}
        index[key] = {"path": str(final), "sha256": sha}
        index_tmp = index_path.with_suffix(f".tmp{os.getpid()}")
        index_tmp.write_text(json.dumps(index, indent=1, sort_keys=True))
        index_tmp.replace(index_path)
        self.echo(f"  built {final.name} ({final.stat().st_size / 1e6:.1f} MB)")
        return Artifact(name, final, sha)

    @staticmethod
    def _platform_args(platforms: Sequence[Path]) -> list[str]:
        return [arg for p in sorted(set(platforms)) for arg in ("--complete-platform", str(p))]

    @staticmethod
    def _platform_texts(platforms: Sequence[Path]) -> list[str]:
        return sorted({p.read_text() for p in platforms})


#: What a local project's digest (and wheel build) leaves out: VCS data, caches, environments
#: anywhere, and build output at its top (a package may well be called "build").
_SKIP_DIRS = {".git", ".hg", ".svn", "__pycache__", ".venv", ".tox", ".nox", ".mypy_cache", ".pytest_cache",
              ".ruff_cache", "node_modules"}
_SKIP_TOP = {"build", "dist"}
_ARCHIVES = (".whl", ".tar.gz", ".tgz", ".zip")


def local_requirement(req: str, base_dir: Path) -> Path | None:
    """The local project (directory, wheel or sdist) ``req`` names, or None for an index requirement.

    Like pip, a requirement is a path when it looks like one: it starts with ``.``, ``/`` or
    ``~``, or names an archive file. A path that does not exist is a BuildError naming it.
    """
    text = req.strip()
    if not (text.startswith((".", "/", "~")) or text.endswith(_ARCHIVES)):
        return None
    path = (base_dir / Path(text).expanduser()).resolve()
    if not path.exists():
        raise BuildError(f"server.requirements: local project {req!r} does not exist ({path})")
    return path


def _local_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    def kept(rel: tuple[str, ...]) -> bool:
        dirs = rel[:-1]
        return not (_SKIP_DIRS & set(dirs) or (dirs and dirs[0] in _SKIP_TOP)
                    or any(d.endswith(".egg-info") for d in dirs))

    return sorted(p for p in path.rglob("*") if p.is_file() and kept(p.relative_to(path).parts))


def _tree_digest(path: Path) -> str:
    """A local project's content digest: an edit rebuilds the server pex, nothing else does."""
    h = hashlib.sha256()
    for f in _local_files(path):
        rel = f.relative_to(path).as_posix() if path.is_dir() else f.name
        h.update(rel.encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def _pure_wheel(path: Path, wheel_dir: Path) -> Path:
    """A wheel of the local project at ``path``, built from a copy (pip builds in-tree and would
    leave build/ and *.egg-info in the user's project). It must be pure Python: it is built with
    this machine's interpreter and has to run on every host's."""
    if path.name.endswith(".whl"):
        wheel = path
    else:
        with tempfile.TemporaryDirectory(prefix="fleetbench-src-") as tmp:
            source = path
            if path.is_dir():
                source = Path(tmp, path.name)
                for f in _local_files(path):
                    target = source / f.relative_to(path)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(f, target)
            out = wheel_dir / path.name.replace(".", "_")
            proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(out),
                                   str(source)], capture_output=True, text=True)
            if proc.returncode != 0:
                raise BuildError(f"building the local project {str(path)!r} failed (pip exit {proc.returncode}):\n"
                                 + tail(proc.stderr or proc.stdout, 30))
        wheel = next(out.glob("*.whl"))
    if not wheel.name.endswith("-none-any.whl"):
        raise BuildError(f"local project {str(path)!r} gives a platform-specific wheel ({wheel.name}); hosts may run "
                         "another Python or platform: publish wheels for each platform to an index instead")
    return wheel


def _runs_module(pex_path: Path, module: str) -> bool:
    """Whether ``python -m module`` can run from the pex: the standard library's, or a
    ``mod.py`` / ``pkg/__main__.py`` / extension module inside one of its wheels."""
    if module.split(".")[0] in sys.stdlib_module_names:
        return True
    rel = module.replace(".", "/")
    with zipfile.ZipFile(pex_path) as z:
        for name in z.namelist():
            parts = name.split("/", 2)  # .deps/<wheel>/<path inside the wheel>
            if len(parts) < 3 or parts[0] != ".deps":
                continue
            inner = parts[2]
            if inner in (f"{rel}.py", f"{rel}/__main__.py") or (inner.startswith(rel + ".") and inner.endswith(".so")):
                return True
    return False


def _module_sources(modules: Mapping[str, Path]) -> dict[str, bytes]:
    """User modules by their path in the pex: ``name.py``, or every file of package ``name/``."""
    out: dict[str, bytes] = {}
    for name, path in sorted(modules.items()):
        if name == "bench":
            raise BuildError("a python workload module may not be named 'bench' (the agent's own package)")
        try:
            if path.is_dir():
                for f in _local_files(path):
                    if f.suffix != ".pyc":
                        out[f"{name}/{f.relative_to(path).as_posix()}"] = f.read_bytes()
            else:
                out[f"{name}.py"] = path.read_bytes()
        except OSError as exc:
            raise BuildError(f"cannot read python workload module {str(path)!r}: {exc.strerror or exc}") from None
    return out


def agent_sources() -> dict[str, bytes]:
    """What the agent pex ships of fleetbench, by path in the pex: ``bench/__init__.py`` and
    every .py file of ``bench/<package>`` for each of ``AGENT_PACKAGES``."""
    root = Path(bench.__file__).parent
    sources = {"bench/__init__.py": (root / "__init__.py").read_bytes()}
    for package in AGENT_PACKAGES:
        sources.update({f"bench/{package}/{rel}": data for rel, data in _package_sources(root / package).items()})
    return sources


def _package_sources(root: Path) -> dict[str, bytes]:
    """The package's .py files by relative path (no caches, no stray files)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*.py"))
        if "__pycache__" not in p.parts
    }
