"""Testbed images: a host may run another root filesystem than the controller's.

An image is a built-in recipe (a Debian suite and architecture built with debootstrap from
Debian's package mirror) or the path of a root filesystem (a directory, or a tarball unpacked
once) that has an sshd. Recipes and unpacked tarballs live in a cache outside the project
clone (``/var/cache/fleetbench/images``, or ``$FLEETBENCH_IMAGE_CACHE``), one directory per
content key, so only the first ``testbed.up`` that asks for an image pays for it. A host never
writes to the cached tree: it is the read-only lower layer of the host's own overlay (see
``imagehost``).

The pure part (recipes, keys, parsing ``--image``) is unit-tested; ``ensure_image`` builds.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .plan import HostPlan, parse_host_values
from .system import TOOL_ENV, TestbedError

CACHE_ENV = "FLEETBENCH_IMAGE_CACHE"
DEFAULT_CACHE = Path("/var/cache/fleetbench/images")
MIRROR = "http://deb.debian.org/debian"
# What fleetbench runs on a host: python3 (preflight, the agent), sh and coreutils (minbase),
# ps/pkill (procps) and ip (iproute2); openssh-server is the host itself.
FLEET_PACKAGES = ("openssh-server", "python3", "procps", "iproute2")
CACHE_FORMAT = 1  # bump when the way a recipe is turned into a tree changes
SSHD_IN_IMAGE = "usr/sbin/sshd"
# The controller's dpkg architecture -> the qemu-user binary that runs it (a foreign recipe).
QEMU_USER = {"arm64": "qemu-aarch64-static", "amd64": "qemu-x86_64-static"}
DPKG_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
BUILD_TIMEOUT = 30 * 60.0
Log = Callable[[str], None]


@dataclass(frozen=True)
class Recipe:
    """A root filesystem debootstrap builds: ``suite`` for ``arch`` with ``packages``."""

    name: str
    suite: str
    arch: str
    packages: tuple[str, ...]
    python: str | None  # the python3 the suite ships (major.minor), None when left out
    mirror: str = MIRROR

    def key(self) -> str:
        """The content key of the recipe's definition: what is built, never its name."""
        definition = {"format": CACHE_FORMAT, "suite": self.suite, "arch": self.arch, "variant": "minbase",
                      "packages": sorted(self.packages), "mirror": self.mirror}
        return hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()[:16]

    def debootstrap_argv(self, target: str, foreign: bool) -> list[str]:
        return ["debootstrap", "--variant=minbase", f"--include={','.join(self.packages)}",
                f"--arch={self.arch}", *(["--foreign"] if foreign else []), self.suite, target, self.mirror]


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("debian11", "bullseye", "amd64", FLEET_PACKAGES, "3.9"),
    Recipe("debian13", "trixie", "amd64", FLEET_PACKAGES, "3.13"),
    Recipe("debian12-arm64", "bookworm", "arm64", FLEET_PACKAGES, "3.11"),
    # sshd and the shell tools but no interpreter: a host fleetbench must bring its own python to.
    Recipe("minimal", "bookworm", "amd64", tuple(p for p in FLEET_PACKAGES if p != "python3"), None),
)}


@dataclass(frozen=True)
class ImageSpec:
    """What a host was asked to run: a recipe by name, or a root filesystem by path."""

    value: str  # as given: a recipe name or an absolute path
    recipe: Recipe | None

    @property
    def label(self) -> str:
        return self.recipe.name if self.recipe else self.value


def parse_image_overrides(values: Iterable[str] | str) -> dict[str, str]:
    """``["tb3=debian11", "*=minimal", "tb4=/srv/rootfs.tar.gz"]`` -> ``{"tb3": "debian11", ...}``."""
    return parse_host_values(values, "--image", "HOST=IMAGE, e.g. tb3=debian11 or '*=minimal'",
                             f"no image after '=' (a recipe: {', '.join(RECIPES)}; or the path of a root filesystem)")


def image_spec(value: str, who: str) -> ImageSpec:
    """A recipe name, or a path (absolute once ``~`` is expanded) that must exist."""
    if value in RECIPES:
        return ImageSpec(value, RECIPES[value])
    path = os.path.abspath(os.path.expanduser(value))
    if "/" not in value and not os.path.exists(path):
        raise TestbedError(f"{who}: no image recipe {value!r} (recipes: {', '.join(RECIPES)}; or give the path of"
                           " a root filesystem, a directory or a tarball)")
    if not os.path.exists(path):
        raise TestbedError(f"{who}: image {value} does not exist")
    if not (os.path.isdir(path) or os.path.isfile(path)):
        raise TestbedError(f"{who}: image {value} is neither a directory nor a tarball")
    return ImageSpec(path, None)


def resolve_images(plans: Sequence[HostPlan], images: Mapping[str, str]) -> dict[str, ImageSpec]:
    """The image of each planned host that has one (its own, else ``*``); an image for a host
    that is not planned is an error. Hosts without one are absent from the result."""
    names = {p.name for p in plans}
    for name in images:
        if name != "*" and name not in names:
            have = f"{plans[0].name}..{plans[-1].name}" if len(plans) > 1 else plans[0].name
            raise TestbedError(f"--image for {name!r}: no such host (this testbed has {have})")
    out = {}
    for p in plans:
        value = images.get(p.name, images.get("*"))
        if value is not None:
            out[p.name] = image_spec(value, f"--image for {p.name if p.name in images else '* (all hosts)'}")
    return out


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def native_arch() -> str:
    machine = platform.machine()
    return DPKG_ARCH.get(machine, machine)


# ---- building and caching --------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    """An image ready to be a host's lower layer."""

    label: str  # recipe name or the path given
    key: str  # cache key (recipe key, or sha256 of a tarball); "" for a directory used in place
    rootfs: str  # the tree hosts see as / (read-only to them)
    built: bool  # this call built or unpacked it (False: taken from the cache, or a directory)
    seconds: float  # what building it took (0 when cached)
    python: str | None  # python3.X found in the tree, e.g. "3.11", or None

    def record(self) -> dict[str, object]:
        return {"name": self.label, "key": self.key, "rootfs": self.rootfs, "built": self.built,
                "build_seconds": round(self.seconds, 1), "python": self.python}


def ensure_images(specs: Mapping[str, ImageSpec], log: Log | None = None) -> dict[str, Image]:
    """Each distinct image of ``specs`` ready (built in parallel where needed), by host."""
    distinct = {s.value: s for s in specs.values()}
    if not distinct:
        return {}
    with ThreadPoolExecutor(max_workers=len(distinct)) as pool:
        ready = dict(zip(distinct, pool.map(lambda s: ensure_image(s, log), distinct.values()), strict=True))
    return {name: ready[s.value] for name, s in specs.items()}


def ensure_image(spec: ImageSpec, log: Log | None = None) -> Image:
    if spec.recipe:
        return ensure_recipe(spec.recipe, cache_dir(), log)
    if os.path.isdir(spec.value):
        check_sshd(spec.value, spec.value)
        return Image(spec.value, "", spec.value, False, 0.0, python_in(spec.value))
    return ensure_tarball(spec.value, cache_dir(), log)


def check_sshd(rootfs: str, label: str) -> None:
    sshd = os.path.join(rootfs, SSHD_IN_IMAGE)
    if not (os.path.lexists(sshd)):
        raise TestbedError(f"image {label} has no /{SSHD_IN_IMAGE}: a testbed host runs the image's own sshd"
                           " (install openssh-server in it)")


def python_in(rootfs: str) -> str | None:
    """The newest python3.X under the tree's /usr/bin, e.g. "3.11"."""
    try:
        names = os.listdir(os.path.join(rootfs, "usr/bin"))
    except OSError:
        return None
    versions = []
    for n in names:
        rest = n.removeprefix("python3.")
        if n.startswith("python3.") and rest.isdigit():
            versions.append((3, int(rest)))
    return "{}.{}".format(*max(versions)) if versions else None


class _CacheLock:
    """One builder of a cache entry at a time, across processes (two testbeds asking at once)."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> _CacheLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def entry_done(entry: Path) -> dict[str, object] | None:
    """The entry's stamp (written last, after the tree is complete), or None."""
    try:
        stamp = json.loads((entry / "image.json").read_text())
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) and (entry / "rootfs").is_dir() else None


def ensure_recipe(recipe: Recipe, cache: Path, log: Log | None = None) -> Image:
    key = recipe.key()
    entry = cache / f"{recipe.name}-{key}"
    with _CacheLock(cache / f".{recipe.name}-{key}.lock"):
        stamp = entry_done(entry)
        if stamp:
            return Image(recipe.name, key, str(entry / "rootfs"), False, 0.0, stamp.get("python"))  # type: ignore[arg-type]
        if log:
            log(f"building image {recipe.name} (debootstrap {recipe.suite} {recipe.arch}) ...")
        t0 = time.monotonic()
        work = cache / f".{recipe.name}-{key}.building"
        _remove_tree(work)
        work.mkdir(parents=True)
        try:
            build_recipe(recipe, work)
            python = python_in(str(work / "rootfs"))
            if recipe.python and python != recipe.python:
                raise TestbedError(f"image recipe {recipe.name}: expected python {recipe.python} in the built"
                                   f" tree, found {python or 'none'}")
            seconds = time.monotonic() - t0
            _publish(work, entry, {
                "recipe": recipe.name, "key": key, "suite": recipe.suite, "arch": recipe.arch,
                "packages": list(recipe.packages), "mirror": recipe.mirror, "python": python,
                "build_seconds": round(seconds, 1), "built_at": time.time()})
        except BaseException:
            _remove_tree(work)
            raise
        if log:
            log(f"built image {recipe.name} in {seconds:.0f}s -> {entry}")
        return Image(recipe.name, key, str(entry / "rootfs"), True, seconds, python)


def build_recipe(recipe: Recipe, work: Path) -> None:
    """debootstrap into ``work/rootfs`` (a foreign arch: first stage here, second stage in a
    chroot under qemu-user), then drop what every host must not share (ssh host keys)."""
    if not shutil.which("debootstrap", path=TOOL_ENV["PATH"]):
        raise TestbedError(f"image recipe {recipe.name} needs debootstrap: apt-get install debootstrap"
                           " (make system-deps installs it)")
    rootfs = work / "rootfs"
    foreign = recipe.arch != native_arch()
    if foreign:
        ensure_binfmt(recipe)
    # In a private mount namespace: whatever debootstrap mounts in the target (proc, sys) and
    # leaves behind when it fails goes with the namespace.
    private = ["unshare", "--mount", "--propagation", "private"]
    _step(recipe, work, "debootstrap", [*private, *recipe.debootstrap_argv(str(rootfs), foreign)], rootfs)
    if foreign:
        qemu = shutil.which(QEMU_USER[recipe.arch], path=TOOL_ENV["PATH"])
        assert qemu  # ensure_binfmt checked it
        shutil.copy2(qemu, rootfs / "usr/bin" / QEMU_USER[recipe.arch])
        _step(recipe, work, "debootstrap --second-stage",
              [*private, "chroot", str(rootfs), "/debootstrap/debootstrap", "--second-stage"], rootfs)
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
    (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
    check_sshd(str(rootfs), f"recipe {recipe.name}")


def _step(recipe: Recipe, work: Path, step: str, argv: list[str], rootfs: Path) -> None:
    out = work / "build.log"
    with open(out, "ab") as fh:
        fh.write(f"$ {shlex.join(argv)}\n".encode())
        fh.flush()
        try:
            # At low priority: a build may run beside a benchmark or other tests.
            cp = subprocess.run(["nice", "-n", "10", *argv], stdin=subprocess.DEVNULL, stdout=fh,
                                stderr=subprocess.STDOUT, env=TOOL_ENV, timeout=BUILD_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise TestbedError(f"image recipe {recipe.name}: {step} did not finish within"
                               f" {BUILD_TIMEOUT / 60:.0f} min") from None
    if cp.returncode != 0:
        raise TestbedError(failure_message(recipe, step, cp.returncode, _read(out),
                                           _read(rootfs / "debootstrap/debootstrap.log")))


def failure_message(recipe: Recipe, step: str, code: int, output: str, debootstrap_log: str) -> str:
    """Name what failed: debootstrap's own complaint (a missing package, a download that
    failed) and the tail of its log."""
    lines = [ln for ln in output.splitlines() if ln.strip()]
    complaints = [ln.strip() for ln in lines if ln.startswith(("E:", "W: Failure", "W: Couldn't"))]
    tail = (debootstrap_log or "\n".join(lines)).strip().splitlines()[-15:]
    head = f"image recipe {recipe.name} ({recipe.suite} {recipe.arch}): {step} failed (exit {code})"
    if complaints:
        head += ": " + "; ".join(dict.fromkeys(complaints))
    return head + "\n  log tail:\n" + "\n".join("    " + ln for ln in tail)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def ensure_binfmt(recipe: Recipe) -> None:
    """A foreign recipe runs its binaries under qemu-user through binfmt_misc (registered by
    the Makefile's system-deps; done here too when it is not, idempotently)."""
    qemu = QEMU_USER.get(recipe.arch)
    if not qemu or not shutil.which(qemu, path=TOOL_ENV["PATH"]):
        raise TestbedError(f"image recipe {recipe.name} ({recipe.arch}) needs {qemu or 'qemu-user'}:"
                           " apt-get install qemu-user-static binfmt-support (make system-deps does)")
    entry = Path("/proc/sys/fs/binfmt_misc") / qemu.removesuffix("-static")
    if not entry.exists():
        if not Path("/proc/sys/fs/binfmt_misc/register").exists():
            subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", "/proc/sys/fs/binfmt_misc"],
                           env=TOOL_ENV, capture_output=True, check=False)
        subprocess.run(["update-binfmts", "--enable", qemu.removesuffix("-static")], env=TOOL_ENV,
                       capture_output=True, check=False)
    if not entry.exists() or "enabled" not in _read(entry):
        raise TestbedError(f"image recipe {recipe.name} ({recipe.arch}): binfmt_misc has no enabled"
                           f" {entry.name} entry; run `make system-deps` (mounts binfmt_misc and runs"
                           f" update-binfmts --enable {entry.name})")


def tarball_key(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def ensure_tarball(path: str, cache: Path, log: Log | None = None) -> Image:
    """A root filesystem tarball, unpacked once into the cache (keyed by its content)."""
    key = tarball_key(path)
    label = os.path.basename(path)
    entry = cache / f"tar-{key}"
    with _CacheLock(cache / f".tar-{key}.lock"):
        stamp = entry_done(entry)
        if stamp:
            return Image(path, key, str(entry / "rootfs"), False, 0.0, stamp.get("python"))  # type: ignore[arg-type]
        t0 = time.monotonic()
        work = cache / f".tar-{key}.building"
        _remove_tree(work)
        (work / "rootfs").mkdir(parents=True)
        try:
            cp = subprocess.run(["tar", "-x", "-p", "--numeric-owner", "-f", path, "-C", str(work / "rootfs")],
                                capture_output=True, text=True, env=TOOL_ENV, timeout=BUILD_TIMEOUT)
            if cp.returncode != 0:
                raise TestbedError(f"image {path}: tar could not unpack it: {cp.stderr.strip()[-400:]}")
            check_sshd(str(work / "rootfs"), path)
            python = python_in(str(work / "rootfs"))
            seconds = time.monotonic() - t0
            _publish(work, entry, {"tarball": path, "key": key, "python": python,
                                   "build_seconds": round(seconds, 1)})
        except BaseException:
            _remove_tree(work)
            raise
        if log:
            log(f"unpacked image {label} in {seconds:.0f}s -> {entry}")
        return Image(path, key, str(entry / "rootfs"), True, seconds, python)


def _publish(work: Path, entry: Path, record: dict[str, Any]) -> None:
    """A built tree becomes the cache entry: its record (image.json, the stamp ``entry_done``
    reads) written last inside it, then the whole directory renamed into place."""
    (work / "image.json").write_text(json.dumps(record, indent=1) + "\n")
    _remove_tree(entry)
    os.replace(work, entry)


def _remove_tree(path: Path) -> None:
    """Remove a (partial) tree; refuse when something is still mounted under it."""
    if not path.exists():
        return
    prefix = str(path) + "/"
    with open("/proc/self/mountinfo") as fh:
        mounted = [ln.split()[4] for ln in fh if ln.split()[4].startswith(prefix) or ln.split()[4] == str(path)]
    if mounted:
        raise TestbedError(f"cannot remove {path}: still mounted there: {', '.join(mounted)}")
    shutil.rmtree(path)


# ---- what hosts.json keeps of an image host ------------------------------------------------


def image_record_fields(image: Image) -> dict[str, Any]:
    """An image host's record: its image, and the python3 the image has (none: "")."""
    return {
        "image": image.record(),
        "python": "/usr/bin/python3" if image.python else "",
        "python_version": image.python or "",
        "python_on_host": "/usr/bin/python3" if image.python else "",
    }


def image_matches(record: Mapping[str, Any], image: Image | None) -> bool:
    """The recorded host runs the image wanted (no image: the controller's root)."""
    have = record.get("image")
    if image is None or not isinstance(have, dict):
        return image is None and not have
    return (have.get("name"), have.get("key"), have.get("rootfs")) == (image.label, image.key, image.rootfs)
