"""What a pex build for several host platforms says when one of them cannot be served.

One multi-platform pex serves every host, and pex resolves its requirements once per complete
platform. When a requirement has no wheel for one platform, pex stops with pip's "Could not
find a version that satisfies the requirement ..." under a long command line, and the platform
shows only inside a temporary path. :func:`find_unbuildable` retries the build one platform at a
time to learn which platforms lack what, and :class:`Unbuildable` turns that into one line per
platform naming the hosts that have it: "no wheel of uvloop for tb3 (CPython 3.11, linux
riscv64, glibc 2.36): needed by the agent".

:func:`versions` reads which release of each project a built pex holds: a pex resolved per
platform could hold two (hdrhistogram 0.10.3 for Python 3.9, 0.10.8 for the rest), and the
hosts of one run must all run the same code.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from fabfile.errors import FleetbenchError
from fabfile.remote.fleet import Interpreter

# pip's words, the same in the pip pex vendors and in current pip.
_NOT_FOUND = re.compile(r"(?:Could not find a version that satisfies the requirement|"
                        r"No matching distribution found for) ([A-Za-z0-9][A-Za-z0-9._-]*)")
_IMPLEMENTATIONS = {"cpython": "CPython", "pypy": "PyPy"}


def missing_project(output: str) -> str | None:
    """The project pip found no distribution of in a failed build's ``output``, if that is why it failed."""
    found = _NOT_FOUND.search(output)
    return found.group(1) if found else None


class Unbuildable(FleetbenchError):
    """Some platforms have no wheel of a requirement: by platform file, the project each lacks.

    Told by the platforms alone until :meth:`for_hosts` names the hosts that have them."""

    def __init__(self, what: str, missing: Mapping[Path, str],
                 hosts: Mapping[str, tuple[Path, Interpreter]] | None = None):
        self.what = what  # "the agent" | "the server"
        self.missing = dict(missing)
        self.hosts = dict(hosts or {})
        super().__init__(self._message())

    def for_hosts(self, hosts: Mapping[str, tuple[Path, Interpreter]]) -> Unbuildable:
        """The same failure, each platform told by the hosts that have it (``host -> (its
        platform file, its interpreter)``, in the order given)."""
        return Unbuildable(self.what, self.missing, hosts)

    def _message(self) -> str:
        lines = []
        for platform, project in sorted(self.missing.items(), key=lambda item: (item[1], str(item[0]))):
            mine = [(host, interpreter) for host, (p, interpreter) in self.hosts.items() if p == platform]
            if mine:
                who = f"{', '.join(host for host, _ in mine)} ({describe(mine[0][1])})"
            else:
                who = describe_platform(platform)
            lines.append(f"no wheel of {project} for {who}: needed by {self.what}")
        return "\n".join(lines) + "\nno pex was pushed to any host"


def describe(interpreter: Interpreter) -> str:
    """``CPython 3.11, linux riscv64, glibc 2.36``: what decides which wheels fit a host."""
    impl = _IMPLEMENTATIONS.get(interpreter.implementation.lower(), interpreter.implementation)
    version = ".".join(interpreter.version.split(".")[:2])
    libc = " ".join(part for part in interpreter.libc if part) or "libc unknown (musl?)"
    return f"{impl} {version}, {interpreter.system.lower()} {interpreter.machine}, {libc}"


def describe_platform(path: Path) -> str:
    """The same from a complete platform file alone (its markers and newest wheel tag)."""
    try:
        data = json.loads(path.read_text())
        markers = data["marker_environment"]
        return (f"{markers['platform_python_implementation']} {markers['python_version']}, "
                f"{markers['sys_platform']} {markers['platform_machine']}, tags like {data['compatible_tags'][0]}")
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return f"the platform in {path}"


def find_unbuildable(platforms: Sequence[Path], build_one: Callable[[Path], str | None]) -> dict[Path, str]:
    """The platforms whose build on its own fails for want of a wheel, with the project missing.

    ``build_one(platform)`` builds for that platform alone: None when that worked, else the
    build's output (any other failure than a missing distribution is not ours to explain)."""
    missing: dict[Path, str] = {}
    for platform in sorted(set(platforms)):
        output = build_one(platform)
        project = missing_project(output) if output is not None else None
        if project is not None:
            missing[platform] = project
    return missing


#: What tells an interpreter apart in its markers and stays while it does: not the kernel's
#: release or version (an upgraded kernel would turn a left-out requirement back on, and the pex
#: would then refuse to start for want of it).
_STABLE_MARKERS = ("implementation_name", "implementation_version", "os_name", "platform_machine",
                   "platform_python_implementation", "platform_system", "python_full_version", "sys_platform")


def excluding(requirement: str, platforms: Iterable[Path]) -> str:
    """``requirement`` with its marker narrowed to leave out ``platforms`` (each told by its
    interpreter's markers): for an optional requirement some hosts have no wheel of. A platform
    whose interpreter has the same markers (another glibc, say) is left out too, which only costs
    it the option."""
    name, _, marker = requirement.partition(";")
    clauses = [f"({marker.strip()})"] if marker.strip() else []
    for platform in sorted(set(platforms)):
        env = json.loads(platform.read_text())["marker_environment"]
        # Markers have no "not": not (k1 == v1 and k2 == v2 ...) is (k1 != v1 or k2 != v2 ...).
        differs = " or ".join(f"{key} != '{env[key]}'" for key in _STABLE_MARKERS
                              if isinstance(env.get(key), str) and "'" not in env[key] and "\\" not in env[key])
        clauses.append(f"({differs})")
    return f"{name.strip()}; {' and '.join(clauses)}" if clauses else name.strip()


_WHEEL = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)-.*\.whl$")


def versions(pex: Path) -> dict[str, set[str]]:
    """Project (normalized name) -> the versions of it that the pex holds, from its PEX-INFO."""
    with zipfile.ZipFile(pex) as z:
        info = json.loads(z.read("PEX-INFO"))
    out: dict[str, set[str]] = {}
    for wheel in info.get("distributions", {}):
        found = _WHEEL.match(wheel)
        if found:
            name = re.sub(r"[-_.]+", "-", found["name"]).lower()
            out.setdefault(name, set()).add(found["version"])
    return out


def check_one_version_each(pex: Path, what: str) -> None:
    """Refuse a pex that holds two releases of one project (different platforms resolved differently)."""
    split = {name: sorted(v) for name, v in versions(pex).items() if len(v) > 1}
    if split:
        listed = "; ".join(f"{name} {' and '.join(v)}" for name, v in sorted(split.items()))
        raise FleetbenchError(f"{what} would run different releases on different hosts ({listed}): the hosts' "
                              "platforms resolved differently; pin one release that has wheels for all of them")
