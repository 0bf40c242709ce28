"""fleetbench's shared half: the agent that runs on hosts, and the pure data both sides use.

Everything under ``bench/`` that the agent imports must run on the hosts' Python (3.9+) with
only the agent pex's own dependency (uvloop, where it has a wheel; else asyncio). That is ``bench/agent``
and ``bench/wire``, the only packages the agent pex ships; the controller-only pure packages
(``bench/spawn``, ``bench/report``) never leave the controller.
"""

__version__ = "0.1.0"
