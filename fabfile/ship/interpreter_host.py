"""Installing the bundled CPython on a host: one shell command, no Python needed there.

The archive (pushed like any file, checked by sha256) is unpacked once into the first of a few
candidate directories where a file can be executed: hardened hosts mount /tmp, and on RHEL 9's
STIG even /home, noexec, so each candidate is probed by executing a tiny script in it. The
binary's loader path is then written into its PT_INTERP in place (``dd``: the placeholder the
controller left there is long enough for any real path), and the tree is renamed into place
atomically: a half-unpacked interpreter is never run.

Why patch on the host rather than ship a wrapper script that runs ``ld.so --library-path``: pex
re-executes its venv's interpreter by path, and a loader named on a command line does not reach
that child; only PT_INTERP does, and it must be absolute, so it can only be known where the
bundle lands (the home directory differs from host to host).
"""

from __future__ import annotations

from dataclasses import dataclass

from fabfile.remote.shell import REMOTE_DIR, cmd

#: Where the bundle may be unpacked, in order (shell words: expanded on the host).
CANDIDATES = (
    f'"$HOME"/{REMOTE_DIR}/python',
    '${XDG_RUNTIME_DIR:+"$XDG_RUNTIME_DIR"/fleetbench-python}',
    '/var/tmp/fleetbench-python-"$(id -u)"',
    '/dev/shm/fleetbench-python-"$(id -u)"',
)

_SCRIPT = r"""
umask 077; cd || exit 1
a=$1; id=$2; off=$3; len=$4; loader=$5; python=$6
tried=""
for base in CANDIDATES; do
  [ -n "$base" ] || continue
  if ! { mkdir -p "$base" 2>/dev/null && chmod 700 "$base" && [ -O "$base" ]; }; then
    tried="$tried;$base (cannot be made a private directory)"; continue
  fi
  base=$(cd "$base" && pwd -P) || continue
  d=$base/$id
  if [ -f "$d/.ready" ] && "$d/bin/$python" -c '' 2>/dev/null; then echo "python $d/bin/$python"; exit 0; fi
  p=$base/.probe-$$
  printf '#!/bin/sh\nexit 0\n' > "$p" && chmod 700 "$p" && "$p" 2>/dev/null; ok=$?; rm -f "$p"
  if [ $ok -ne 0 ]; then
    m=$(df -P "$base" 2>/dev/null | awk 'NR==2 {print $6}')
    tried="$tried;$base (mount ${m:-unknown}): cannot execute there"; continue
  fi
  t=$base/.$id.part-$$
  rm -rf "$t" && mkdir "$t" || exit 1
  if ! tar -xzf "$a" -C "$t"; then rm -rf "$t"; echo "cannot unpack $a into $base" >&2; exit 1; fi
  path=$d/lib/$loader
  n=$(printf '%s' "$path" | wc -c)
  if [ "$n" -ge "$len" ]; then rm -rf "$t"; echo "the loader's path is too long ($n bytes): $path" >&2; exit 1; fi
  if ! { printf '%s' "$path"; head -c $((len - n)) /dev/zero; } \
      | dd of="$t/bin/$python" bs=1 seek="$off" conv=notrunc 2>/dev/null; then
    rm -rf "$t"; echo "cannot write the loader's path into $t/bin/$python" >&2; exit 1
  fi
  : > "$t/.ready"
  mv "$t" "$d" 2>/dev/null || rm -rf "$t"  # another deploy's unpack won the race: use its copy
  if out=$("$d/bin/$python" -c 'import ssl, sqlite3, asyncio, ctypes, lzma' 2>&1); then
    echo "python $d/bin/$python"; exit 0
  fi
  echo "the bundled python in $d does not run: $out" >&2; exit 1
done
echo "noexec$tried"
"""

SCRIPT = _SCRIPT.replace("CANDIDATES", " ".join(CANDIDATES))
NOEXEC = "noexec"

#: Removes the bundled python from the candidates outside ~/.fleetbench (a ``down`` removes that
#: whole directory), each only if it is ours.
REMOVE_ELSEWHERE = ("for d in " + " ".join(CANDIDATES[1:]) + '; do [ -n "$d" ] && [ -d "$d" ] && [ -O "$d" ]'
                    ' && rm -rf "$d"; done; true')


@dataclass(frozen=True)
class Placement:
    """Where the host's bundled python ended up (absolute), or the directories that could not execute."""

    python: str = ""
    tried: tuple[str, ...] = ()


def install_command(archive: str, bundle_id: str, offset: int, length: int, loader: str, python: str) -> str:
    """The shell command that unpacks ``archive`` (relative to home) and says where python is."""
    return cmd("sh", "-c", SCRIPT, "unpack-python", archive, bundle_id, offset, length, loader, python)


def parse(output: str) -> Placement:
    """What :func:`install_command` printed: ``python PATH``, or ``noexec;DIR (why);...``."""
    line = output.strip().splitlines()[-1] if output.strip() else ""
    if line.startswith("python "):
        return Placement(python=line[len("python "):])
    if line.startswith(NOEXEC):
        return Placement(tried=tuple(t for t in line[len(NOEXEC):].split(";") if t))
    raise ValueError(f"unexpected answer from the interpreter's install: {output.strip()[-300:]!r}")
