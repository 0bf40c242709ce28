"""The four lifecycles of a fleet, each a function ``run`` over a :class:`fabfile.session.Session`:
deploy (build, push, start servers), bench (start the run on the hosts and follow it), collect
(fetch what the hosts finished and merge the run), down (stop and clean every host). What they
share about a run on the hosts (its plan, its follower, its live view) is in fabfile.runs."""

from fabfile.stages import bench, collect, deploy, down

__all__ = ["bench", "collect", "deploy", "down"]
