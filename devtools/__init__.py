"""The repository's own developer tools, not installed with fleetbench: ``testbed`` (a local
fleet of real sshd hosts in network namespaces, ``inv testbed.*``) and the perf suite
(``perf`` and its ``perf_*`` parts, ``inv perf``)."""
