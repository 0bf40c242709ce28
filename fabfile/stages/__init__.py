"""The four lifecycles of a fleet, each a function ``run`` over a :class:`fabfile.session.Session`:
deploy (build, push, start servers), bench (phases of agents), collect (merge a run, no SSH),
down (stop and clean every host). ``agents`` runs one agent process over its SSH channel."""

from fabfile.stages import agents, bench, collect, deploy, down

__all__ = ["agents", "bench", "collect", "deploy", "down"]
