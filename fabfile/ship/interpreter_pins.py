"""What the bundled CPython is made of: pure data (pinned packages, trimming rules), no side effects.

Debian 12's own CPython 3.11, its standard library, and the shared libraries it and its extension
modules link (glibc's loader and libc among them), each a .deb fetched by URL from Debian's
mirror and checked against its sha256 from the Packages index of the bookworm snapshot
(2025-05-20) this controller's apt uses. Nothing here is trusted from the network but the bytes
whose digests are pinned.
"""

from __future__ import annotations

from dataclasses import dataclass

DEBIAN = "http://deb.debian.org/debian"
SECURITY = "http://deb.debian.org/debian-security"

PYTHON_VERSION = "3.11"
PYTHON_FULL_VERSION = "3.11.2"


@dataclass(frozen=True)
class Deb:
    package: str
    url: str
    sha256: str


def _deb(package: str, mirror: str, pool_path: str, sha256: str) -> Deb:
    return Deb(package, f"{mirror}/{pool_path}", sha256)


#: Per machine (``uname -m``): the packages. Only x86_64 is pinned so far (aarch64 is the same
#: list from the arm64 pool, not yet pinned).
DEBS: dict[str, tuple[Deb, ...]] = {
    "x86_64": (
        _deb("python3.11-minimal", SECURITY,
             "pool/updates/main/p/python3.11/python3.11-minimal_3.11.2-6+deb12u9_amd64.deb",
             "b5f855ab922dfcd5d1a3223b2118c3dae13ffc7751b0cd5dc24740386323a33a"),
        _deb("libpython3.11-minimal", SECURITY,
             "pool/updates/main/p/python3.11/libpython3.11-minimal_3.11.2-6+deb12u9_amd64.deb",
             "69f41cfa3f4ba17284e538f843069d7529c53c207d2ae17a5b02785944870e33"),
        _deb("libpython3.11-stdlib", SECURITY,
             "pool/updates/main/p/python3.11/libpython3.11-stdlib_3.11.2-6+deb12u9_amd64.deb",
             "10f13e000ee757f5f2d2d3569f9e30546214a0c850acd78695feae373bfa3e53"),
        _deb("libc6", DEBIAN, "pool/main/g/glibc/libc6_2.36-9+deb12u14_amd64.deb",
             "ba4f88f73dbc3ae9055f3c20f4523bfdbaf1ad13ff95e258924f77d20b4fbedf"),
        _deb("libssl3", SECURITY, "pool/updates/main/o/openssl/libssl3_3.0.22-1~deb12u2_amd64.deb",
             "cb4784740daa9b3b0eaea2b444bbefa686794afbbf3d678d238c1fd9875f2efd"),
        _deb("libffi8", DEBIAN, "pool/main/libf/libffi/libffi8_3.4.4-1_amd64.deb",
             "6d9f6c25c30efccce6d4bceaa48ea86c329a3432abb360a141f76ac223a4c34a"),
        _deb("zlib1g", SECURITY, "pool/updates/main/z/zlib/zlib1g_1.2.13.dfsg-1+deb12u1_amd64.deb",
             "ad9f1ea0537a32c9eaecc619563a9db596a5dee33afce8393b1083f22d301e1d"),
        _deb("libexpat1", SECURITY, "pool/updates/main/e/expat/libexpat1_2.5.0-1+deb12u5_amd64.deb",
             "cae5ded666d8573dd33060bc66fbac21eea8b101a6b56e2af8bd590fcfa65d79"),
        _deb("liblzma5", SECURITY, "pool/updates/main/x/xz-utils/liblzma5_5.4.1-1+deb12u2_amd64.deb",
             "3d8c29c8c21ec6007635e1b2591edf98b771c9572a085968f47452b33040f384"),
        _deb("libbz2-1.0", DEBIAN, "pool/main/b/bzip2/libbz2-1.0_1.0.8-5+b1_amd64.deb",
             "54149da3f44b22d523b26b692033b84503d822cc5122fed606ea69cc83ca5aeb"),
        _deb("libsqlite3-0", DEBIAN, "pool/main/s/sqlite3/libsqlite3-0_3.40.1-2+deb12u2_amd64.deb",
             "a8d78b40e9b4e422224aeebfe0e4dfc243f6acf3532490b0c05480d4283d41e2"),
        _deb("libuuid1", DEBIAN, "pool/main/u/util-linux/libuuid1_2.38.1-5+deb12u3_amd64.deb",
             "5fff398321da62d28a842bcbabd193d72ae21724962c029dc32b1dc6b2deaeaf"),
        _deb("libcrypt1", DEBIAN, "pool/main/libx/libxcrypt/libcrypt1_4.4.33-2_amd64.deb",
             "f5f60a5cdfd4e4eaa9438ade5078a57741a7a78d659fcb0c701204f523e8bd29"),
    ),
}

#: glibc's loader, by machine: its file name in the bundle's lib/ and the PT_INTERP it replaces.
LOADERS = {"x86_64": "ld-linux-x86-64.so.2", "aarch64": "ld-linux-aarch64.so.1"}
#: Debian's multiarch directory, by machine: where the libraries lie in the packages.
MULTIARCH = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu"}

#: The binary's PT_INTERP while it travels: a path no host has, long enough for any real one. The
#: host overwrites it in place (with ``dd``: the host may have no Python) with the absolute path of
#: the loader where it unpacked the bundle, NUL-padded; patchelf cannot run there.
LOADER_PLACEHOLDER = "/fleetbench-loader-placeholder/" + "x" * 224

#: Left out of the standard library: the test suite, GUIs and tools nobody runs on a benchmark host
#: (directories of lib/python3.11), and extension modules whose libraries we do not bundle.
TRIM_DIRS = frozenset({"test", "tkinter", "idlelib", "ensurepip", "lib2to3", "turtledemo", "unittest/test",
                       "distutils/tests", "ctypes/test", "sqlite3/test", "__phello__"})
TRIM_MODULE_PREFIXES = ("_tkinter", "readline", "_curses", "_dbm", "_gdbm", "nis", "_test", "xxlimited",
                        "_xxtestfuzz", "_ctypes_test")

#: What the bundle must import where it runs: a build that cannot is refused on the controller.
SMOKE_IMPORTS = ("ssl", "sqlite3", "asyncio", "ctypes", "lzma", "bz2", "zlib", "hashlib", "uuid", "json",
                 "decimal", "pyexpat", "venv")


def trimmed(relative: str) -> bool:
    """Whether a path of lib/python3.11 (``relative``, with ``/``) is left out of the bundle."""
    if "__pycache__" in relative.split("/"):
        return True  # compiled on the host on first import, for its own Python
    if any(relative == d or relative.startswith(d + "/") for d in TRIM_DIRS):
        return True
    name = relative.rsplit("/", 1)[-1]
    return relative.startswith("lib-dynload/") and name.startswith(TRIM_MODULE_PREFIXES)
