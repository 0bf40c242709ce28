"""Manual use: ``python -m devtools.testbed up|status|down`` (the invoke tasks wrap the same API)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import __doc__ as package_doc
from .bringup import Testbed
from .images import parse_image_overrides
from .pythons import parse_python_overrides
from .system import TestbedError


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="testbed", description=(package_doc or "").split("\n")[0])
    ap.add_argument("--state-dir", default=".testbed")
    ap.add_argument("--prefix", default="tb")
    ap.add_argument("--subnet", type=int, default=0)
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up")
    up.add_argument("--hosts", type=int, default=5)
    up.add_argument("--python", action="append", default=[], metavar="HOST=PATH")
    up.add_argument("--uplink", default=None, metavar="RATE")
    up.add_argument("--image", action="append", default=[], metavar="HOST=IMAGE")
    ap.add_argument("--user", default=None, help="hosts log in as this unprivileged user")
    ap.add_argument("--bastion", action="store_true", help="the fleet only behind a bastion host")
    ap.add_argument("--nat", action="store_true", help="hosts behind a 1:1 NAT: reached only at public addresses")
    ap.add_argument("--stock-sshd", action="store_true", help="the hosts' sshd keeps OpenSSH's stock limits")
    sub.add_parser("status")
    sub.add_parser("down")
    a = ap.parse_args(argv)
    try:
        tb = Testbed(Path(a.state_dir), prefix=a.prefix, subnet=a.subnet, user=a.user, bastion=a.bastion, nat=a.nat,
                     sshd_limits="stock" if a.stock_sshd else "relaxed")
        if a.cmd == "up":
            t0 = time.monotonic()
            hosts = tb.up(a.hosts, parse_python_overrides(a.python), a.uplink, images=parse_image_overrides(a.image))
            for h in hosts:
                python = f"{h.python_version} ({h.python})" if h.python else "none"
                print(f"{h.name:8} {h.address:15} pid {h.sshd_pid:<7} python {python}"
                      + (f"  image {h.image}" if h.image else ""))
            print(f"{len(hosts)} hosts up in {time.monotonic() - t0:.2f}s; ssh -F {tb.ssh_config_path} {hosts[0].name}")
        elif a.cmd == "status":
            print(json.dumps(tb.status(), indent=2))
        else:
            tb.down()
    except TestbedError as e:
        print(f"testbed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
