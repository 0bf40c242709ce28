"""Reading and planning: the spawn file (``spec``, ``schema`` and its tables: ``hosts``,
``server``, ``server_files``, ``benchmarks``, ``expectations``, ``secrets``) is loaded
(``load``, ``inventory``, ``cli_hosts``) and checked (``checks``: every error names its key
path) into a typed Spawn, and ``plan`` turns it into phases of agent jobs (bench.wire).
No SSH, no processes."""
