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
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Sequence

import bench
from fabric import Connection
from pex.version import __version__ as PEX_VERSION

from fabfile.fleet import Interpreter
from fabfile.push import push, sha256_file
from fabfile.remote import BIN_DIR, PEX_ROOT, cmd, run, tail

#: What the agent needs on a host, and nothing else: the agent pex stays lean.
AGENT_REQUIREMENTS = ("hdrhistogram>=0.10.3", "uvloop>=0.17; sys_platform == 'linux'")
AGENT_ENTRY = "bench.agent"


class BuildError(Exception):
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

    def to_dict(self) -> Dict[str, str]:
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

    def probe_platform(self, c: Connection, interpreter: Interpreter) -> Path:
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

    def server(self, requirements: Sequence[str], script: str, platforms: Sequence[Path]) -> Artifact:
        """A ``--venv`` pex that execs ``script`` (so the server is the pid we started)."""
        inputs = {"kind": "server", "requirements": list(requirements), "script": script,
                  "platforms": self._platform_texts(platforms), "pex": PEX_VERSION}
        args = [*requirements, "-c", script, "--venv", "--sh-boot", "--no-build", *self._platform_args(platforms)]
        return self._cached("server", inputs, lambda out: _pex([*args, "-o", str(out)], "the server pex"))

    def agent(self, platforms: Sequence[Path]) -> Artifact:
        """fleetbench's own ``bench`` package and only its runtime deps: the tool deploys itself."""
        sources = _package_sources(Path(bench.__file__).parent)
        inputs = {"kind": "agent", "requirements": list(AGENT_REQUIREMENTS), "entry": AGENT_ENTRY,
                  "sources": {k: hashlib.sha256(v).hexdigest() for k, v in sources.items()},
                  "platforms": self._platform_texts(platforms), "pex": PEX_VERSION}

        def build(out: Path) -> None:
            with tempfile.TemporaryDirectory(prefix="fleetbench-src-") as src:
                for rel, data in sources.items():
                    target = Path(src, "bench", rel)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(data)
                _pex([*AGENT_REQUIREMENTS, "-D", src, "-m", AGENT_ENTRY, "--venv", "--sh-boot", "--no-build",
                      *self._platform_args(platforms), "-o", str(out)], "the agent pex")

        return self._cached("agent", inputs, build)

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
    def _platform_args(platforms: Sequence[Path]) -> List[str]:
        return [arg for p in sorted(set(platforms)) for arg in ("--complete-platform", str(p))]

    @staticmethod
    def _platform_texts(platforms: Sequence[Path]) -> List[str]:
        return sorted({p.read_text() for p in platforms})


def _package_sources(root: Path) -> Dict[str, bytes]:
    """The package's .py files by relative path (no caches, no stray files)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*.py"))
        if "__pycache__" not in p.parts
    }
