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


#: Debian's name of each machine (``uname -m``) we have pins for.
DEB_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}

#: (package, mirror, pool path without ``_ARCH.deb``, sha256 by machine), from the Packages indexes
#: of bookworm and bookworm-security for amd64 and arm64 (apt verified their signatures).
_PACKAGES: tuple[tuple[str, str, str, dict[str, str]], ...] = (
    ("python3.11-minimal", SECURITY, "pool/updates/main/p/python3.11/python3.11-minimal_3.11.2-6+deb12u9",
     {"x86_64": "b5f855ab922dfcd5d1a3223b2118c3dae13ffc7751b0cd5dc24740386323a33a",
      "aarch64": "617855dbf3299e03873926c75d61feaf3d36924586aecc1951a0b965a95bc694"}),
    ("libpython3.11-minimal", SECURITY, "pool/updates/main/p/python3.11/libpython3.11-minimal_3.11.2-6+deb12u9",
     {"x86_64": "69f41cfa3f4ba17284e538f843069d7529c53c207d2ae17a5b02785944870e33",
      "aarch64": "dd9847d2f77c5a924b1d3dd953b81f161db9374c94d03b9216191925350928c3"}),
    ("libpython3.11-stdlib", SECURITY, "pool/updates/main/p/python3.11/libpython3.11-stdlib_3.11.2-6+deb12u9",
     {"x86_64": "10f13e000ee757f5f2d2d3569f9e30546214a0c850acd78695feae373bfa3e53",
      "aarch64": "9937cbe3f647aa89a590fec647438ce02098c113d1c6f70e4cb1230c368d42a4"}),
    ("libc6", DEBIAN, "pool/main/g/glibc/libc6_2.36-9+deb12u14",
     {"x86_64": "ba4f88f73dbc3ae9055f3c20f4523bfdbaf1ad13ff95e258924f77d20b4fbedf",
      "aarch64": "01f4330719fd4f65580e16ea5a0527f372fca750e8f588d26deaf09f2d3b1cf4"}),
    ("libssl3", SECURITY, "pool/updates/main/o/openssl/libssl3_3.0.22-1~deb12u2",
     {"x86_64": "cb4784740daa9b3b0eaea2b444bbefa686794afbbf3d678d238c1fd9875f2efd",
      "aarch64": "3d04ecd8d0f57fed50d205abaeedfcc84c1960073ea085719c00add44b0ccd7f"}),
    ("libffi8", DEBIAN, "pool/main/libf/libffi/libffi8_3.4.4-1",
     {"x86_64": "6d9f6c25c30efccce6d4bceaa48ea86c329a3432abb360a141f76ac223a4c34a",
      "aarch64": "80b5c36177dc0e29d531c7eddbed3cc7355cb490e49f8cfa5959572d161f27b3"}),
    ("zlib1g", SECURITY, "pool/updates/main/z/zlib/zlib1g_1.2.13.dfsg-1+deb12u1",
     {"x86_64": "ad9f1ea0537a32c9eaecc619563a9db596a5dee33afce8393b1083f22d301e1d",
      "aarch64": "61477d8059daf1765683a73099cc17941e1970acb520fd238646dedf99eb16f6"}),
    ("libexpat1", SECURITY, "pool/updates/main/e/expat/libexpat1_2.5.0-1+deb12u5",
     {"x86_64": "cae5ded666d8573dd33060bc66fbac21eea8b101a6b56e2af8bd590fcfa65d79",
      "aarch64": "4a733e7f636de4a4483e3e5d7b02dc8e788b115361a04dd58df89461ce2ae65a"}),
    ("liblzma5", SECURITY, "pool/updates/main/x/xz-utils/liblzma5_5.4.1-1+deb12u2",
     {"x86_64": "3d8c29c8c21ec6007635e1b2591edf98b771c9572a085968f47452b33040f384",
      "aarch64": "36358d245f246234721e6c1c2ee5d11a46c1c877023c63f7570df02cd79964f5"}),
    ("libbz2-1.0", DEBIAN, "pool/main/b/bzip2/libbz2-1.0_1.0.8-5+b1",
     {"x86_64": "54149da3f44b22d523b26b692033b84503d822cc5122fed606ea69cc83ca5aeb",
      "aarch64": "d3a96ece03326498b39ff093a76800dfcbcb1d4049d6ae6e9f6fa1aa7a590ad6"}),
    ("libsqlite3-0", DEBIAN, "pool/main/s/sqlite3/libsqlite3-0_3.40.1-2+deb12u2",
     {"x86_64": "a8d78b40e9b4e422224aeebfe0e4dfc243f6acf3532490b0c05480d4283d41e2",
      "aarch64": "a690f7f2aa6435bd1fd7cbbd2216acb9acbb8c48c9721f2c195766375439eb13"}),
    ("libuuid1", DEBIAN, "pool/main/u/util-linux/libuuid1_2.38.1-5+deb12u3",
     {"x86_64": "5fff398321da62d28a842bcbabd193d72ae21724962c029dc32b1dc6b2deaeaf",
      "aarch64": "3b2d19df0f3190108cf54228c4cfc822226c06d8f3615a5ab16a7dffb1f58aed"}),
    ("libcrypt1", DEBIAN, "pool/main/libx/libxcrypt/libcrypt1_4.4.33-2",
     {"x86_64": "f5f60a5cdfd4e4eaa9438ade5078a57741a7a78d659fcb0c701204f523e8bd29",
      "aarch64": "eea0ad76ea5eb507127fea0c291622ea4ecdbb71c4b9a8ed9c76ae33fc1a0127"}),
)

#: Per machine (``uname -m``): the packages.
DEBS: dict[str, tuple[Deb, ...]] = {
    machine: tuple(Deb(package, f"{mirror}/{stem}_{arch}.deb", shas[machine])
                   for package, mirror, stem, shas in _PACKAGES)
    for machine, arch in DEB_ARCH.items()
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
