"""The testbed: a local fleet of real hosts, each a real OpenSSH sshd in its own namespaces.

Every host ``{prefix}{i}`` is

* a network namespace ``fb-{prefix}{i}`` holding ``lo`` and ``eth0``; ``eth0`` is one end of a
  veth pair whose other end (``fbv-{prefix}{i}``) is a port of a private bridge
  ``fbbr-{prefix}`` in the root namespace. The bridge has ``.1`` of ``10.213.{subnet}.0/24``
  (the controller's address on the fleet network); host ``i`` has ``.{10+i}``.
* a private mount namespace (propagation private) in which fresh tmpfs are mounted on
  ``/root`` (700), ``/tmp``, ``/var/tmp``, ``/dev/shm`` (1777) and ``/usr/local/bin`` (755),
  so every host starts with an empty home and /tmp and nothing it writes there is seen by
  another host or by the controller. ``/etc/hosts`` lists every testbed host (updated in
  place when the fleet grows); ``/etc/resolv.conf`` points nowhere, so an unknown name fails
  at once (nothing routes out of the testbed). MACs are fixed per address (``02:fb:`` + the
  IPv4 octets) so a rebuilt host is reachable at once, with no stale ARP entry anywhere.
* a private UTS namespace (``hostname`` is the host's name) and a private PID namespace
  whose pid 1 is the host's sshd (``sshd -D``): a host sees only its own processes
  (``pkill`` on one host cannot hit another), and ending that sshd ends everything that
  runs on the host, like powering it off.

What sshd needs after ``/root`` and ``/tmp`` are hidden (host key, authorized_keys, pid
file, log) lives in ``<state_dir>/hosts/<name>/`` and is bind-mounted, before hiding, at
``/run/fleetbench-testbed/<prefix>/<name>/sshd``: that works wherever the project clone
(and so ``state_dir``) sits, /tmp and /root included. A per-host Python (``pythons=``) whose
prefix is hidden on the host (pyenv under /root, anything under /tmp) is bind-mounted
read-only at ``/run/fleetbench-testbed/<prefix>/<name>/python`` and ``python3`` in the
host's own ``/usr/local/bin`` runs it (``LD_LIBRARY_PATH`` set for a shared libpython whose
RUNPATH points into the hidden prefix; ssh sessions on that host get it too).

``<state_dir>`` also holds the client key, ``ssh_config``, ``known_hosts`` (each host's
real key under its alias and address: strict checking works) and ``hosts.json``, the record
``status``/``down`` and the next ``up`` work from. Needs root.

Two topologies of real fleets: ``user="bench"`` has every host log in as an unprivileged
user (uid >= 2000, no sudo) whose home ``/home/bench`` is a symlink to ``/home/data/bench``
(passwd and group bind-mounted, /home a fresh tmpfs); ``bastion=True`` takes the
controller's address off the bridge and adds a bastion host ``{prefix}0``, the only host
the controller reaches (its own veth pair on the subnet's first /30), and ``ssh_config``
gives every host ``ProxyJump {prefix}0``.

``nat=True`` puts the fleet behind a 1:1 NAT as a cloud does: the controller reaches host
``i`` only at ``198.18.{subnet}.{10+i}`` (``ssh_config`` and ``known_hosts`` name it so),
translated to its private address by the nftables table ``fleetbench_nat_{prefix}`` (the
``output`` hook of the root namespace only) and routed into the testbed's own bridge; hosts
hold only their private addresses and have no route to 198.18.0.0/15, and the controller is
refused the private addresses themselves (with a bastion, only the bastion is public).
``sshd_limits="stock"`` runs every sshd with OpenSSH's stock MaxStartups and MaxSessions.

``uplink="20mbit"`` puts a tbf qdisc on the bridge's own egress: that carries only what the
root namespace (the controller) sends to hosts; frames forwarded between bridge ports
(host to host) never pass it, and neither does what hosts send to the controller.

The package, by concern: ``plan`` (pure names, addresses, shaping), ``network`` (namespaces,
veth, bridge, tc), ``sshd`` (keys, client files, the hosts' sshd), ``pythons`` (interpreter
probing and relocation), ``state`` (the record, ownership, crash recovery and teardown),
``users`` (the login user of the ``user=`` topology), ``layout`` (paths and names),
``images`` (root filesystems for hosts: recipes, building, the cache) and ``imagehost`` (the pid
1 of a host that runs an image: ``up(..., images={"tb3": "debian11"})``),
``bringup`` (the ``Testbed`` these make up), ``system`` (running tools, /proc).

Library use (the invoke tasks wrap exactly this)::

    tb = Testbed(project / ".testbed", prefix="tb", subnet=0)
    hosts = tb.up(5, parse_python_overrides(["tb3=/root/.pyenv/versions/3.9.18/bin/python3.9"]),
                  uplink="20mbit")
    tb.status(); tb.down()
    # then: ssh -F .testbed/ssh_config tb1 ...   /   fabric Connection("tb1", ssh_config=...)
"""

from __future__ import annotations

from .bringup import Testbed
from .images import RECIPES, parse_image_overrides
from .layout import RUNTIME_ROOT, SSHD
from .plan import (
    MAX_HOSTS,
    HostPlan,
    TestbedHost,
    mac_for,
    network_for,
    parse_rate,
    plan_hosts,
    tbf_args,
    validate_prefix,
)
from .pythons import DEFAULT_PYTHON, PythonSpec, parse_python_overrides
from .sshd import known_hosts_text, ssh_config_text
from .system import TestbedError

__all__ = [
    "DEFAULT_PYTHON",
    "MAX_HOSTS",
    "RUNTIME_ROOT",
    "SSHD",
    "HostPlan",
    "PythonSpec",
    "RECIPES",
    "Testbed",
    "TestbedError",
    "TestbedHost",
    "known_hosts_text",
    "mac_for",
    "network_for",
    "parse_image_overrides",
    "parse_python_overrides",
    "parse_rate",
    "plan_hosts",
    "ssh_config_text",
    "tbf_args",
    "validate_prefix",
]
