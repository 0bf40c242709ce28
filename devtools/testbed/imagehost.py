"""An image host: the testbed host whose / is an image (see ``images``), not the controller's.

Its pid 1 starts like any host's (its own network, mount, UTS and PID namespaces) and then,
inside its private mount namespace, mounts a tmpfs holding the upper layer of an overlay whose
lower layer is the cached image (read-only, shared by every host of that image): what a host
writes (its /tmp, its home, /etc) is its own, kept in memory, and goes with the host. Into that
root it mounts proc, sysfs, a /dev of its own (the basic nodes bound in, a new devpts instance,
/dev/shm), a fresh /run, the testbed's /etc/hosts and resolv.conf, and its own host dir at the
same path as any host sees it; then it becomes the image's own sshd, chrooted, with the
image's default sshd_config plus one drop-in that sets only where it listens, its host key and
the authorized key. Nothing of the controller's filesystem is visible on it.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from .images import Image
from .layout import Layout
from .plan import HostPlan
from .sshd import SSH_PORT
from .system import TestbedError, write_atomic

DROP_IN = "/etc/ssh/sshd_config.d/fleetbench-testbed.conf"
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
             ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx"))


def drop_in_text(address: str, mount: str) -> str:
    """The only sshd settings the testbed makes on an image host."""
    return (
        "# fleetbench testbed: where this host listens and its keys; all else is the image's default\n"
        f"ListenAddress {address}:{SSH_PORT}\n"
        f"HostKey {mount}/ssh_host_ed25519_key\n"
        f"AuthorizedKeysFile {mount}/authorized_keys\n"
    )


def includes_drop_ins(sshd_config: str) -> bool:
    """Whether an image's sshd_config reads /etc/ssh/sshd_config.d/*.conf (Debian's does)."""
    return any(line.split()[:2] == ["Include", "/etc/ssh/sshd_config.d/*.conf"]
               for line in sshd_config.splitlines() if line.strip())


def sshd_argv(mount: str, address: str, drop_ins_read: bool) -> list[str]:
    """The image's sshd as pid 1: foreground, logging into the host dir (its path in the
    command line is how the testbed knows the process). An image whose sshd_config does not
    read drop-ins gets the same three settings as options instead."""
    argv = ["/usr/sbin/sshd", "-D", "-E", f"{mount}/sshd.log"]
    if not drop_ins_read:
        argv += ["-o", f"ListenAddress={address}:{SSH_PORT}", "-o", f"HostKey={mount}/ssh_host_ed25519_key",
                 "-o", f"AuthorizedKeysFile={mount}/authorized_keys"]
    return argv


def image_host_script(*, host_dir: str, image_dir: str, lower: str, mount: str, etc_hosts: str,
                      resolv_conf: str, hostname: str, sshd: list[str]) -> str:
    """The shell run as pid 1 of an image host (in its namespaces, still in the controller's /).

    ``image_dir`` is an empty directory for the host's layers, ``lower`` the image's tree,
    ``mount`` where the host sees ``host_dir`` (keys, log), ``sshd`` the command run in the
    chroot. Its pid as seen from the root pid namespace goes to ``host_dir/sshd.pid``.
    """
    q = shlex.quote
    root = f"{image_dir}/root"
    r = q(root)
    lines = [
        "set -e",
        "pid=",
        'while read -r key value _; do if [ "$key" = NSpid: ]; then pid=$value; fi; done </proc/self/status',
        '[ -n "$pid" ]',
        f'echo "$pid" > {q(host_dir + "/sshd.pid.tmp")}',
        f"mv {q(host_dir + '/sshd.pid.tmp')} {q(host_dir + '/sshd.pid')}",
        # The host's writable layer: memory of its own, gone with its mount namespace.
        f"mount -t tmpfs -o mode=755 tmpfs {q(image_dir)}",
        f"mkdir {q(image_dir + '/upper')} {q(image_dir + '/work')} {r}",
        f"mount -t overlay overlay -o {q(overlay_options(lower, image_dir))} {r}",
        f"mount -t proc proc {r}/proc",
        f"mount -t sysfs sysfs {r}/sys",
        f"mount -t tmpfs -o mode=755,nosuid tmpfs {r}/dev",
    ]
    for node in DEV_NODES:
        lines.append(f": > {r}/dev/{node} && mount --bind /dev/{node} {r}/dev/{node}")
    lines += [
        f"mkdir -m 755 {r}/dev/pts && mkdir -m 1777 {r}/dev/shm",
        f"mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts {r}/dev/pts",
        f"mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs {r}/dev/shm",
        *(f"ln -s {q(target)} {r}/dev/{name}" for name, target in DEV_LINKS),
        f"mount -t tmpfs -o mode=755,nosuid,nodev tmpfs {r}/run",
        f"mkdir -m 755 -p {r}/run/sshd {r}/run/lock {q(root + mount)}",
        f"mount --bind {q(host_dir)} {q(root + mount)}",
    ]
    for source, target in ((etc_hosts, "/etc/hosts"), (resolv_conf, "/etc/resolv.conf")):
        # A symlink (resolv.conf -> a resolver's file) is replaced in the host's own layer.
        lines += [f"rm -f {r}{target} && : > {r}{target}",
                  f"mount --bind {q(source)} {r}{target}", f"mount -o remount,bind,ro {r}{target}"]
    lines += [
        f"mkdir -p {r}/etc/ssh/sshd_config.d",
        f"cp {q(host_dir + '/sshd_drop_in.conf')} {r}{DROP_IN}",
        f"echo {q(hostname)} > {r}/etc/hostname",
        f"hostname {q(hostname)}",
        f"cd {r}",
        f"exec chroot {r} " + " ".join(q(a) for a in sshd),
    ]
    return "\n".join(lines) + "\n"


def overlay_options(lower: str, image_dir: str) -> str:
    for path in (lower, image_dir):
        if any(c in path for c in ",:\\"):  # overlayfs option syntax has no quoting for these
            raise TestbedError(f"an image host's overlay layer path may not contain ',', ':' or '\\': {path}")
    return f"lowerdir={lower},upperdir={image_dir}/upper,workdir={image_dir}/work"


def launch_script(lay: Layout, p: HostPlan, image: Image) -> str:
    """Write the host's drop-in and make its layer mount point; the script of its pid 1."""
    d = lay.host_dir(p.name)
    mount = lay.sshd_mount(p.name)
    image_dir = lay.runtime_dir / p.name / "image"
    image_dir.mkdir(parents=True, exist_ok=True)
    address = lay.ssh_address(p)
    write_atomic(d / "sshd_drop_in.conf", drop_in_text(address, mount))
    try:
        config = (Path(image.rootfs) / "etc/ssh/sshd_config").read_text(errors="replace")
    except OSError:
        config = ""
    return image_host_script(host_dir=str(d), image_dir=str(image_dir), lower=image.rootfs, mount=mount,
                             etc_hosts=str(lay.etc_hosts_path), resolv_conf=str(lay.resolv_conf_path),
                             hostname=p.name, sshd=sshd_argv(mount, address, includes_drop_ins(config)))
