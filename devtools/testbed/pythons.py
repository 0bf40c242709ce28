"""Each host's python3: probing an interpreter on the controller, and the wrapper a host runs.

A prefix hidden on the hosts (pyenv under /root, anything under /tmp) is relocated: bind-mounted
read-only at a neutral path, with ``LD_LIBRARY_PATH`` for a shared libpython.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .layout import Layout
from .plan import HIDDEN_ON_HOSTS, HostPlan, parse_host_values
from .system import TOOL_ENV, TestbedError, write_atomic

DEFAULT_PYTHON = "/usr/bin/python3"

_PY_PROBE = (
    "import sys, json; print(json.dumps({'version': '%d.%d.%d' % tuple(sys.version_info[:3]),"
    " 'prefix': sys.prefix, 'base_prefix': getattr(sys, 'base_prefix', sys.prefix),"
    " 'base_exec_prefix': getattr(sys, 'base_exec_prefix', sys.exec_prefix),"
    " 'executable': sys.executable}))"
)


@dataclass(frozen=True)
class PythonSpec:
    """An interpreter chosen for a host, probed on the controller."""

    path: str  # as given (absolute)
    executable: str  # realpath of the binary
    version: str  # e.g. "3.9.18"
    prefix: str  # realpath of sys.base_prefix
    relocate: bool  # prefix (or binary) is hidden on hosts: bind it in at a neutral path
    relative_executable: str  # executable relative to prefix, e.g. bin/python3.9

    @property
    def is_default(self) -> bool:
        return self.path == DEFAULT_PYTHON

    @property
    def short_version(self) -> str:
        return ".".join(self.version.split(".")[:2])


def parse_python_overrides(values: Iterable[str]) -> dict[str, str]:
    """``["tb3=/path/python3.9", "*=/usr/bin/python3.11"]`` -> ``{"tb3": "/path/...", ...}``.

    ``*`` sets the interpreter of every host without its own entry. Paths are returned as
    given, with ``~`` expanded; whether a host exists and the path runs is checked by ``up``.
    """
    given = parse_host_values(values, "python override", "HOST=PATH, e.g. tb3=/usr/bin/python3.9",
                              "no interpreter path after '='")
    return {name: os.path.expanduser(path) for name, path in given.items()}


def wrapper_text(spec: PythonSpec, run_path: str, lib_path: str | None, mount: str | None = None) -> str:
    """/usr/local/bin/python3 on a host with an overridden interpreter."""
    lines = [
        "#!/bin/sh",
        f"# fleetbench testbed: python3 here is {spec.path} ({spec.version})",
    ]
    if mount:
        lines.append(f"# its prefix {spec.prefix} is bind-mounted read-only at {mount}")
    if lib_path:
        lines += [
            f'case ":${{LD_LIBRARY_PATH:-}}:" in *":{lib_path}:"*) ;; '
            f'*) LD_LIBRARY_PATH="{lib_path}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}"; export LD_LIBRARY_PATH ;; esac',
        ]
    lines.append(f'exec {shlex.quote(run_path)} "$@"')
    return "\n".join(lines) + "\n"


def under(path: str, roots: Iterable[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def wrapper_names(spec: PythonSpec) -> tuple[str, ...]:
    return ("python3", f"python{spec.short_version}") if spec.short_version != "3" else ("python3",)


def probe_python(path: str, who: str) -> PythonSpec:
    if not os.path.isabs(path):
        raise TestbedError(f"{who}: {path!r} is not an absolute path")
    if not os.path.exists(path):
        raise TestbedError(f"{who}: {path} does not exist")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise TestbedError(f"{who}: {path} is not an executable file")
    try:
        cp = subprocess.run([path, "-E", "-s", "-c", _PY_PROBE], capture_output=True, text=True,
                            timeout=30, env=TOOL_ENV, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise TestbedError(f"{who}: {path} does not run: {e}") from e
    try:
        info = json.loads(cp.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        detail = (cp.stderr or cp.stdout).strip()[-400:]
        raise TestbedError(f"{who}: {path} is not a working Python: {detail}") from None
    prefix = os.path.realpath(info["base_prefix"])
    if os.path.realpath(info["prefix"]) != prefix:
        raise TestbedError(
            f"{who}: {path} is a virtual environment's interpreter; give its base interpreter"
            f" (under {info['base_prefix']})"
        )
    if os.path.realpath(info["base_exec_prefix"]) != prefix:
        raise TestbedError(f"{who}: {path} has exec_prefix != prefix; not supported")
    exe = os.path.realpath(info["executable"] or path)  # a pyenv shim resolves to the real binary
    relocate = under(prefix, HIDDEN_ON_HOSTS) or under(exe, HIDDEN_ON_HOSTS) or under(path, HIDDEN_ON_HOSTS)
    rel = os.path.relpath(exe, prefix)
    if relocate and (rel.startswith("..") or os.path.isabs(rel)):
        raise TestbedError(f"{who}: {path} (really {exe}) is not inside its prefix {prefix}")
    return PythonSpec(path=path, executable=exe, version=info["version"], prefix=prefix,
                      relocate=relocate, relative_executable=rel)



def resolve_pythons(plans: Sequence[HostPlan], pythons: Mapping[str, str]) -> dict[str, PythonSpec]:
    """Each planned host's interpreter (its own override, else ``*``, else the default), probed
    once per path; an override for a host that is not planned is an error."""
    names = {p.name for p in plans}
    for name in pythons:
        if name != "*" and name not in names:
            have = f"{plans[0].name}..{plans[-1].name}" if len(plans) > 1 else plans[0].name
            raise TestbedError(f"python override for {name!r}: no such host (this testbed has {have})")
    default = pythons.get("*", DEFAULT_PYTHON)
    wanted = {p.name: pythons.get(p.name, default) for p in plans}
    probed: dict[str, PythonSpec] = {}
    for path in sorted(set(wanted.values())):
        named = [n for n in pythons if n != "*" and pythons[n] == path]
        if named:
            who = f"python override for {named[0]}"
        elif "*" in pythons and pythons["*"] == path:
            who = "python override for '*' (all hosts)"
        else:
            who = "default python"
        probed[path] = probe_python(path, who)
    return {name: probed[path] for name, path in wanted.items()}


def relocated_lib_path(lay: Layout, name: str, spec: PythonSpec) -> str | None:
    """The host's view of a relocated prefix's ``lib`` (for a shared libpython), if any."""
    if not spec.is_default and spec.relocate and os.path.isdir(os.path.join(spec.prefix, "lib")):
        return f"{lay.python_mount(name)}/lib"
    return None


def write_wrappers(lay: Layout, name: str, spec: PythonSpec, bin_dir: Path) -> None:
    """The host's ``python3`` (and ``python3.X``) wrappers, copied into its /usr/local/bin at start."""
    if spec.is_default:
        return
    if spec.relocate:
        (lay.runtime_dir / name / "python").mkdir(exist_ok=True)
        run_path = f"{lay.python_mount(name)}/{spec.relative_executable}"
    else:
        run_path = spec.executable
    text = wrapper_text(spec, run_path, relocated_lib_path(lay, name, spec),
                        lay.python_mount(name) if spec.relocate else None)
    for w in wrapper_names(spec):
        write_atomic(bin_dir / w, text, 0o755)
