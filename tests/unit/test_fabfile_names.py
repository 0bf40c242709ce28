"""Invoke's and Fabric's loaders put the directory holding ``fabfile/`` on ``sys.path`` and import
what is beside the task modules by plain name, so a direct child of ``fabfile/`` named like a
standard-library module or an installed distribution's top-level package could shadow it (the
old flat layout had ``ssh``, ``build``, ``remote``, ``state``...). Keep the children's names
our own."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import fabfile

FABFILE = Path(fabfile.__file__).parent
OURS = {"fleetbench"}  # our own distribution installs bench/ and fabfile/ themselves


def children(directory: Path) -> set[str]:
    """The importable names directly under ``directory``: modules and packages."""
    names = {p.stem for p in directory.glob("*.py") if p.stem != "__init__"}
    names |= {p.name for p in directory.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    return names


def clashes(names: set[str]) -> dict[str, str]:
    installed = importlib.metadata.packages_distributions()
    found = {}
    for name in sorted(names):
        if name in sys.stdlib_module_names:
            found[name] = "the standard library"
        elif set(installed.get(name, [])) - OURS:
            found[name] = "installed " + ", ".join(sorted(set(installed[name]) - OURS))
    return found


def test_no_child_of_fabfile_shadows_a_standard_or_installed_module() -> None:
    names = children(FABFILE)
    assert {"errors", "session", "remote", "ship", "stages"} <= names  # the walk sees the tree
    assert clashes(names) == {}


def test_the_guard_catches_a_clash(tmp_path: Path) -> None:
    (tmp_path / "ssl.py").write_text("")
    (tmp_path / "invoke").mkdir()
    (tmp_path / "invoke" / "__init__.py").write_text("")
    (tmp_path / "mine.py").write_text("")
    (tmp_path / "not_a_package").mkdir()  # no __init__.py: nothing to import
    assert children(tmp_path) == {"ssl", "invoke", "mine"}
    assert clashes(children(tmp_path)) == {"invoke": "installed invoke", "ssl": "the standard library"}
