"""fleetbench's shared half: the agent that runs on hosts, and the pure data both sides use.

Everything under ``bench/`` that the agent imports must run on the hosts' Python (3.9+) with
only the agent pex's own dependencies (hdrhistogram, optionally uvloop). Controller-only pure
modules (spec, tables) live here too but are never imported by the agent.
"""

__version__ = "0.1.0"
